//! `cargo xtask loadtest`: a bounded load test of `strata-server`.
//!
//! Builds the release server, makes a model repository holding SqueezeNet (the materialized
//! light model from `testdata/models`, with its batch dimension freed by
//! `xtask/python/batchable.py`), and for batching on and off starts the server, runs N
//! keep-alive clients sending binary-encoded requests for D seconds, reads the server's
//! metrics, and stops it with SIGTERM (which must exit 0). Reports throughput, p50/p99
//! latency, mean batch size (inferences / executions) and errors, printed and written to
//! target/loadtest/report.md. Options after `--`: `--clients N` (64), `--duration S` (20).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::flags::Args;
use crate::{testdata, util};

/// What one run measured.
struct Outcome {
    label: &'static str,
    requests: usize,
    errors: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    mean_batch: f64,
}

/// Entry point of `cargo xtask loadtest [-- --clients N --duration S]`.
pub(crate) fn run(args: &Args) -> Result<()> {
    args.expect_flags(&[])?;
    let clients = option(&args.passthrough, "--clients", 64)?;
    let duration = Duration::from_secs(option(&args.passthrough, "--duration", 20)? as u64);
    let root = util::project_root();
    let testdata = testdata::ensure(false)?;
    let venv = testdata::ensure_python(false)?;
    util::step("cargo build --release -p strata-server", || {
        util::run(util::cargo().args(["build", "--release", "-p", "strata-server"]))
    })?;
    let work = root.join("target/loadtest");
    let repo = work.join("repo");
    util::remove_all(&repo)?;
    std::fs::create_dir_all(repo.join("squeezenet/1"))?;
    util::run(
        Command::new(&venv.python)
            .arg(root.join("xtask/python/batchable.py"))
            .arg(testdata.join("models/light_squeezenet/model.onnx"))
            .arg(repo.join("squeezenet/1/model.onnx")),
    )?;
    let server = root.join("target/release/strata-server");
    let mut outcomes = Vec::new();
    for (label, config) in [
        (
            "batching on (max 8, delay 2 ms)",
            "max_batch_size = 8\nthreads = 1\ninstances = 2\n[dynamic_batching]\nmax_queue_delay_microseconds = 2000\nmax_queue_size = 256\n",
        ),
        (
            "batching off",
            "max_batch_size = 0\nthreads = 1\ninstances = 2\n[dynamic_batching]\nmax_queue_size = 256\n",
        ),
    ] {
        std::fs::write(repo.join("squeezenet/config.toml"), config)?;
        let outcome = util::step(&format!("load test: {label}"), || {
            run_one(label, &server, &repo, clients, duration)
        })?;
        outcomes.push(outcome);
    }
    let report = render(&outcomes, clients, duration);
    println!("{report}");
    std::fs::write(work.join("report.md"), &report)?;
    if let Some(bad) = outcomes.iter().find(|o| o.errors > 0) {
        bail!("{}: {} requests failed", bad.label, bad.errors);
    }
    Ok(())
}

/// `--name N` from the passthrough arguments, or `default`.
fn option(args: &[String], name: &str, default: usize) -> Result<usize> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{name} needs a number")),
    }
}

/// Starts the server, waits for its address line, returns the child and the address.
fn start_server(server: &Path, repo: &Path) -> Result<(Child, String)> {
    let mut child = Command::new(server)
        .args(["--port", "0", "--model-repository"])
        .arg(repo)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", server.display()))?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.split("http://").nth(1) {
            let addr = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            // Keep draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return Ok((child, addr));
        }
    }
    let _ = child.kill();
    bail!("the server exited before listening")
}

fn run_one(
    label: &'static str,
    server: &Path,
    repo: &Path,
    clients: usize,
    duration: Duration,
) -> Result<Outcome> {
    let (mut child, addr) = start_server(server, repo)?;
    let image: Vec<u8> = (0..3 * 224 * 224)
        .flat_map(|i| (((i * 37) % 255) as f32 / 255.0).to_le_bytes())
        .collect();
    let header = format!(
        r#"{{"inputs":[{{"name":"data_0","shape":[1,3,224,224],"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}],"outputs":[{{"name":"softmaxout_1","parameters":{{"binary_data":true}}}}]}}"#,
        image.len()
    );
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&image);
    let body = Arc::new(body);
    let header_len = header.len();
    // Warm up: one request.
    let mut probe = Client::connect(&addr)?;
    probe.infer(&body, header_len)?;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, body, stop) = (addr.clone(), body.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut client = Client::connect(&addr).ok();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let ok = match client.as_mut() {
                        Some(c) => c.infer(&body, header_len).is_ok(),
                        None => false,
                    };
                    if ok {
                        latencies.push(t.elapsed().as_secs_f64() * 1e3);
                    } else {
                        errors += 1;
                        client = Client::connect(&addr).ok();
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    std::thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?;
        latencies.extend(l);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    let metrics = probe.get("/metrics")?;
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let inferences = metric("strata_inference_count_total");
    let executions = metric("strata_inference_exec_count_total");
    let successes = metric("strata_inference_request_success_total");
    drop(probe);
    stop_server(&mut child)?;
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    // +1: the warm-up request.
    if (successes as usize) != latencies.len() + 1 {
        bail!(
            "{label}: the server counted {successes} successes, the clients {} (requests lost)",
            latencies.len() + 1
        );
    }
    Ok(Outcome {
        label,
        requests: latencies.len(),
        errors,
        seconds,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        mean_batch: if executions > 0.0 {
            inferences / executions
        } else {
            0.0
        },
    })
}

/// Sends SIGTERM and expects a clean exit within 60 s.
fn stop_server(child: &mut Child) -> Result<()> {
    util::run(Command::new("kill").args(["-TERM", &child.id().to_string()]))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("the server exited with {status} after SIGTERM");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the server did not exit within 60 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn render(outcomes: &[Outcome], clients: usize, duration: Duration) -> String {
    let mut out = format!(
        "# strata-server load test\n\nSqueezeNet 1.0 (batch dimension freed), {clients} keep-alive clients, {} s per mode, binary tensor data, 1 thread per execution, 2 instances. Command: `cargo xtask loadtest`.\n\n| mode | requests | errors | throughput (req/s) | p50 ms | p99 ms | mean batch |\n|---|---:|---:|---:|---:|---:|---:|\n",
        duration.as_secs()
    );
    for o in outcomes {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} |\n",
            o.label,
            o.requests,
            o.errors,
            o.requests as f64 / o.seconds,
            o.p50_ms,
            o.p99_ms,
            o.mean_batch
        ));
    }
    out
}

/// A keep-alive HTTP/1.1 client good for exactly this test.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    host: String,
}

impl Client {
    fn connect(addr: &str) -> Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            host: addr.to_string(),
        })
    }

    fn infer(&mut self, body: &[u8], header_len: usize) -> Result<Vec<u8>> {
        let head = format!(
            "POST /v2/models/squeezenet/infer HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nInference-Header-Content-Length: {header_len}\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        );
        self.writer.write_all(head.as_bytes())?;
        self.writer.write_all(body)?;
        let (status, reply) = self.read_response()?;
        if status != 200 {
            bail!("status {status}: {}", String::from_utf8_lossy(&reply));
        }
        Ok(reply)
    }

    fn get(&mut self, path: &str) -> Result<String> {
        let head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.writer.write_all(head.as_bytes())?;
        let (_, body) = self.read_response()?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    fn read_response(&mut self) -> Result<(u16, Vec<u8>)> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((name, value)) = trimmed.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse()?;
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, body))
    }
}
