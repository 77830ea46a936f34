//! Shared test helpers: a server on an ephemeral port in a background runtime, a temporary
//! model repository, and a minimal blocking HTTP/1.1 client.
#![allow(dead_code)]

use serde_json::Value as Json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;
use strata_server::{Server, ServerConfig};

/// A server running on its own runtime thread; stopped (gracefully) on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    pub fn start(mut config: ServerConfig) -> TestServer {
        config.port = 0;
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let server = Server::bind(config).await.unwrap();
                addr_tx.send(server.local_addr().unwrap()).unwrap();
                server
                    .serve(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(120)).unwrap();
        TestServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops accepting, drains, and waits for the server thread.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, &[], &[])
    }

    pub fn post_json(&self, path: &str, body: &Json) -> Reply {
        request(
            self.addr,
            "POST",
            path,
            &[("Content-Type", "application/json".to_string())],
            body.to_string().as_bytes(),
        )
    }

    /// A binary-data request: the JSON header then the raw bytes.
    pub fn post_binary(&self, path: &str, header: &Json, binary: &[u8]) -> Reply {
        let mut body = header.to_string().into_bytes();
        let length = body.len();
        body.extend_from_slice(binary);
        request(
            self.addr,
            "POST",
            path,
            &[
                ("Content-Type", "application/octet-stream".to_string()),
                ("Inference-Header-Content-Length", length.to_string()),
            ],
            &body,
        )
    }

    /// The value of a metric line starting with `prefix` (0 when absent).
    pub fn metric(&self, prefix: &str) -> f64 {
        let text = self.get("/metrics").text();
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The JSON body (the JSON part of a binary-data body).
    pub fn json(&self) -> Json {
        let end = self
            .header("inference-header-content-length")
            .map_or(self.body.len(), |v| v.parse().unwrap());
        serde_json::from_slice(&self.body[..end])
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The binary part of a binary-data body.
    pub fn binary(&self) -> &[u8] {
        let start: usize = self
            .header("inference-header-content-length")
            .expect("a binary response")
            .parse()
            .unwrap();
        &self.body[start..]
    }

    /// The error message of an error response.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// Sends one request on a fresh connection and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading a large body; ignore a reset while writing.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// A temporary model repository; removed on drop.
pub struct TempRepo {
    pub root: PathBuf,
}

impl TempRepo {
    pub fn new(tag: &str) -> TempRepo {
        let root = std::env::temp_dir().join(format!(
            "strata-server-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        TempRepo { root }
    }

    /// Adds `NAME/VERSION/model.onnx` (or `NAME/model.onnx` without a version).
    pub fn add(&self, name: &str, version: Option<u64>, bytes: &[u8]) -> &Self {
        let mut dir = self.root.join(name);
        if let Some(v) = version {
            dir = dir.join(v.to_string());
        }
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("model.onnx"), bytes).unwrap();
        self
    }

    pub fn config(&self, name: &str, file: &str, text: &str) -> &Self {
        std::fs::write(self.root.join(name).join(file), text).unwrap();
        self
    }

    pub fn server_config(&self) -> ServerConfig {
        ServerConfig {
            model_repository: Some(self.root.clone()),
            ..ServerConfig::default()
        }
    }
}

impl Drop for TempRepo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Eight example digits' pixels (the first rows of the sample file), as one flat vector.
pub fn digit_pixels(rows: usize) -> Vec<f32> {
    (0..rows * 64)
        .map(|i| ((i * 7 + i / 64) % 17) as f32)
        .collect()
}
