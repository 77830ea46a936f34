//! onnxruntime, driven through its Python API: a client of `xtask/python/bench/ort_worker.py`
//! (`serve` mode) running in the venv's interpreter, one JSON object per line each way.
//! Timings are measured inside Python (`perf_counter` around `sess.run`), so the pipe costs
//! nothing. The worker runs with `OPENBLAS_NUM_THREADS=1` so that numpy's sgemm, the GEMM
//! reference, is single-threaded.

use crate::accuracy::Check;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value as Json};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// What loading a model reported.
#[derive(Debug, Clone)]
pub struct OrtLoad {
    /// Session creation, ms.
    pub load_ms: f64,
    /// The first run, ms.
    pub first_ms: f64,
    /// The first run's outputs against the reference.
    pub check: Check,
}

/// A running worker process.
#[derive(Debug)]
pub struct OrtWorker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl OrtWorker {
    /// Starts `python script serve`.
    pub fn spawn(python: &Path, script: &Path) -> Result<Self> {
        let mut child = Command::new(python)
            .arg(script)
            .arg("serve")
            .env("OPENBLAS_NUM_THREADS", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {} {}", python.display(), script.display()))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        Ok(OrtWorker {
            child,
            stdin,
            stdout,
        })
    }

    /// Sends one request and reads its reply; a reply with `error` is an error.
    fn call(&mut self, request: Json) -> Result<Json> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow!("worker closed"))?;
        writeln!(stdin, "{request}").context("writing to the onnxruntime worker")?;
        stdin.flush()?;
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("the onnxruntime worker exited");
        }
        let reply: Json = serde_json::from_str(&line)
            .with_context(|| format!("bad reply from the onnxruntime worker: {line}"))?;
        if let Some(e) = reply.get("error") {
            bail!("onnxruntime: {}", e.as_str().unwrap_or("error"));
        }
        Ok(reply)
    }

    /// Versions of Python, onnxruntime, numpy and numpy's BLAS.
    pub fn info(&mut self) -> Result<Json> {
        self.call(json!({"cmd": "info"}))
    }

    /// Creates a session on `model` with `threads` intra-op threads, fed the `inputs` files
    /// repeated `batch` times along axis 0, and checks its first run against `outputs`.
    pub fn load(
        &mut self,
        model: &Path,
        threads: usize,
        batch: usize,
        inputs: &[PathBuf],
        outputs: &[PathBuf],
    ) -> Result<OrtLoad> {
        let reply = self.call(json!({
            "cmd": "load",
            "model": model,
            "threads": threads,
            "batch": batch,
            "inputs": inputs,
            "outputs": outputs,
        }))?;
        let check = &reply["check"];
        Ok(OrtLoad {
            load_ms: number(&reply, "load_ms")?,
            first_ms: number(&reply, "first_ms")?,
            check: Check {
                max_abs_diff: check["max_abs_diff"].as_f64().unwrap_or(f64::NAN),
                mismatches: check["mismatches"].as_u64().unwrap_or(0) as usize,
                shape_ok: check["shape_ok"].as_bool().unwrap_or(false),
            },
        })
    }

    /// One timed run of the loaded session, ms.
    pub fn run(&mut self) -> Result<f64> {
        number(&self.call(json!({"cmd": "run"}))?, "ms")
    }

    /// One timed `n x n x n` float32 numpy matmul, ms.
    pub fn sgemm(&mut self, n: usize) -> Result<f64> {
        number(&self.call(json!({"cmd": "sgemm", "n": n}))?, "ms")
    }
}

fn number(reply: &Json, key: &str) -> Result<f64> {
    reply[key]
        .as_f64()
        .ok_or_else(|| anyhow!("onnxruntime worker reply lacks `{key}`: {reply}"))
}

impl Drop for OrtWorker {
    fn drop(&mut self) {
        drop(self.stdin.take()); // EOF: the worker's loop ends
        let _ = self.child.wait();
    }
}
