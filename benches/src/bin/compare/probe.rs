//! Load time and peak memory, each engine in a fresh process so that nothing another engine
//! or model allocated counts: `compare probe strata|tract MODEL_DIR THREADS` (this binary)
//! and `ort_worker.py probe` (onnxruntime). A probe reads the test inputs, notes its peak
//! resident set size (`VmHWM`), then loads the model, runs it once (load-to-first-result)
//! and three more times, and prints one JSON line: `load_ms`, `first_ms` and `rss_kb`, the
//! growth of `VmHWM` over the noted value.

use crate::measure::chain;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value as Json};
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use strata_benches::engines::{StrataRunner, TractRunner};
use strata_benches::machine::vm_hwm_kb;
use strata_benches::testdata::TestCase;

/// What one probe measured.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub load_ms: Option<f64>,
    pub first_ms: Option<f64>,
    pub rss_kb: Option<f64>,
    pub error: Option<String>,
}

impl Probe {
    /// Load-to-first-result, ms.
    pub fn load_to_first_ms(&self) -> Option<f64> {
        Some(self.load_ms? + self.first_ms?)
    }

    pub fn rss_mb(&self) -> Option<f64> {
        self.rss_kb.map(|kb| kb / 1024.0)
    }

    fn from_json(line: &Json) -> Probe {
        Probe {
            load_ms: line["load_ms"].as_f64(),
            first_ms: line["first_ms"].as_f64(),
            rss_kb: line["rss_kb"].as_f64(),
            error: None,
        }
    }

    pub fn to_json(&self) -> Json {
        json!({
            "load_ms": self.load_ms, "first_ms": self.first_ms,
            "rss_kb": self.rss_kb, "error": self.error,
        })
    }
}

/// The three probes of one model.
#[derive(Debug)]
pub struct ProbeRow {
    pub model: String,
    pub strata: Probe,
    pub ort: Option<Probe>,
    pub tract: Probe,
}

/// The child side: `compare probe ENGINE MODEL_DIR THREADS`.
pub fn run_probe(args: &[String]) -> Result<()> {
    let [engine, dir, threads] = args else {
        bail!("usage: compare probe strata|tract MODEL_DIR THREADS");
    };
    let threads: usize = threads.parse().context("THREADS")?;
    let case = TestCase::load_dir(Path::new(dir))?;
    let baseline = vm_hwm_kb();
    let start = Instant::now();
    let (load_ms, first_ms) = match engine.as_str() {
        "strata" => {
            let runner = StrataRunner::new(&case.model_path, &case.inputs, threads)?;
            let load_ms = start.elapsed().as_secs_f64() * 1e3;
            let first_ms = runner.run_timed()?;
            for _ in 0..3 {
                runner.run_timed()?;
            }
            (load_ms, first_ms)
        }
        "tract" => {
            let runner = TractRunner::new(&case.model_path, &case.inputs)?;
            let load_ms = start.elapsed().as_secs_f64() * 1e3;
            let first_ms = runner.run_timed()?;
            for _ in 0..3 {
                runner.run_timed()?;
            }
            (load_ms, first_ms)
        }
        other => bail!("no engine `{other}` (strata or tract)"),
    };
    let rss_kb = vm_hwm_kb()
        .zip(baseline)
        .map(|(peak, base)| peak.saturating_sub(base));
    println!(
        "{}",
        json!({"load_ms": load_ms, "first_ms": first_ms, "rss_kb": rss_kb})
    );
    Ok(())
}

/// Runs a probe command and parses the last line of its stdout.
fn probe(cmd: &mut Command) -> Probe {
    let result = (|| -> Result<Probe> {
        let out = cmd.output().context("starting the probe")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let last = stderr.lines().last().unwrap_or("").to_string();
            bail!("probe failed ({}): {last}", out.status);
        }
        let line = stdout.lines().last().ok_or_else(|| anyhow!("no output"))?;
        Ok(Probe::from_json(&serde_json::from_str(line)?))
    })();
    result.unwrap_or_else(|e| Probe {
        error: Some(chain(&e)),
        ..Default::default()
    })
}

/// The three probes of `case` with one thread (onnxruntime when `python` is given).
pub fn probe_model(case: &TestCase, python: Option<&Path>, script: &Path) -> ProbeRow {
    eprintln!("[{}] load and peak-memory probes", case.name);
    let exe = std::env::current_exe().expect("the running binary has a path");
    let dir = case.model_path.parent().expect("model.onnx is in a folder");
    let rust = |engine: &str| {
        probe(
            Command::new(&exe)
                .arg("probe")
                .arg(engine)
                .arg(dir)
                .arg("1"),
        )
    };
    let ort = python.map(|py| {
        probe(
            Command::new(py)
                .arg(script)
                .arg("probe")
                .arg(&case.model_path)
                .arg("1")
                .args(case.input_paths())
                .env("PYTHONDONTWRITEBYTECODE", "1"),
        )
    });
    ProbeRow {
        model: case.name.clone(),
        strata: rust("strata"),
        ort,
        tract: rust("tract"),
    }
}
