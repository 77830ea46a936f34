//! strata-server: serves ONNX models over the KServe/Triton v2 inference protocol (the Open
//! Inference Protocol) on hyper and tokio.
//!
//! - [`config`]: the server's settings and each model's serving settings;
//! - [`repository`]: the model folder (Triton's layout), load/unload, model states;
//! - [`served`]: one model version with its request queue and batch executor (stacking on
//!   [`strata_sched::DynamicBatcher`]);
//! - [`http`]: the endpoints; [`protocol`]: the wire format; [`metrics`]: Prometheus metrics.
//!
//! [`Server::bind`] then [`Server::serve`] runs a server until a shutdown future resolves;
//! [`run`] does that for the binaries, stopping on SIGINT/SIGTERM after the queues drain.
//! docs/api.md describes the endpoints.

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod repository;
pub mod served;

pub use config::{Limits, ModelConfig, ServerConfig};
pub use error::{ApiError, ServerError};
pub use repository::{Repository, EMBEDDED_MODEL, EMBEDDED_MODEL_NAME};

use http::AppState;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use strata_sched::FairGate;
use tokio::net::TcpListener;

/// How long shutdown waits for open connections to finish their requests.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

/// A bound server, not yet serving.
#[derive(Debug)]
pub struct Server {
    state: Arc<AppState>,
    listener: TcpListener,
}

impl Server {
    /// Loads the repository and binds the listening socket. Blocking work (model loading)
    /// runs on a blocking thread.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        let gate = Arc::new(FairGate::new(config.compute_slots()));
        let metrics = Arc::new(metrics::Metrics::default());
        let root = config.model_repository.clone();
        let repository =
            tokio::task::spawn_blocking(move || Repository::open(root.as_deref(), gate, metrics))
                .await
                .map_err(|e| ServerError::Io {
                    context: "loading the model repository".into(),
                    source: std::io::Error::other(e.to_string()),
                })??;
        let address = format!("{}:{}", config.host, config.port);
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| ServerError::Io {
                context: format!("binding {address}"),
                source,
            })?;
        Ok(Server {
            state: Arc::new(AppState {
                repository: Arc::new(repository),
                limits: config.limits,
                shutting_down: Default::default(),
            }),
            listener,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, ServerError> {
        self.listener
            .local_addr()
            .map_err(|source| ServerError::Io {
                context: "reading the bound address".into(),
                source,
            })
    }

    /// The model repository.
    pub fn repository(&self) -> &Arc<Repository> {
        &self.state.repository
    }

    /// Serves until `shutdown` resolves; then stops accepting, lets open connections finish
    /// (up to 30 s), and drains every model's queue.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let state = self.state.clone();
                    let service = service_fn(move |request| http::handle(state.clone(), request));
                    let connection = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        self.state.shutting_down.store(true, Ordering::SeqCst);
        drop(self.listener);
        tracing::info!("shutting down: finishing queued and open requests");
        // Close the queues first so batches still forming are dispatched now.
        self.state.repository.close();
        if tokio::time::timeout(DRAIN_LIMIT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("some connections were still open after {DRAIN_LIMIT:?}");
        }
        let repository = self.state.repository.clone();
        let _ = tokio::task::spawn_blocking(move || repository.shutdown()).await;
        Ok(())
    }
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere).
pub async fn termination_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Command-line options of `strata-server` and `strata serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Folder of models (NAME/VERSION/model.onnx or NAME/model.onnx); default: the embedded
    /// example model.
    #[arg(long, value_name = "DIR")]
    pub model_repository: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long)]
    pub host: Option<String>,
    /// Port to listen on (0: any free port) [default: 8000].
    #[arg(long)]
    pub port: Option<u16>,
    /// Server config file (TOML or JSON); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ServeArgs {
    /// The config these options describe.
    pub fn to_config(&self) -> Result<ServerConfig, ServerError> {
        let mut config = match &self.config {
            Some(path) => ServerConfig::from_file(path)?,
            None => ServerConfig::default(),
        };
        if let Some(dir) = &self.model_repository {
            config.model_repository = Some(dir.clone());
        }
        if let Some(host) = &self.host {
            config.host = host.clone();
        }
        if let Some(port) = self.port {
            config.port = port;
        }
        Ok(config)
    }
}

/// A curl command that runs one inference on the embedded model.
pub fn example_curl(addr: SocketAddr) -> String {
    let pixels: Vec<String> = (0..64)
        .map(|i| if (i / 8 + i % 8) % 3 == 0 { "8" } else { "0" }.to_string())
        .collect();
    format!(
        "curl -s -X POST http://{addr}/v2/models/{EMBEDDED_MODEL_NAME}/infer -H 'Content-Type: application/json' \\\n  -d '{{\"inputs\":[{{\"name\":\"pixels\",\"shape\":[1,64],\"datatype\":\"FP32\",\"data\":[{}]}}]}}'",
        pixels.join(",")
    )
}

/// Sends `tracing` logs to stderr, filtered by `RUST_LOG` (default `info`). For binaries.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A second call (the subscriber is already set) changes nothing.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs the server with `args` until SIGINT/SIGTERM; prints where it listens and an example
/// request.
pub fn run(args: &ServeArgs) -> Result<(), ServerError> {
    let config = args.to_config()?;
    let embedded = config.model_repository.is_none();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strata-http")
        .build()
        .map_err(|source| ServerError::Io {
            context: "starting the async runtime".into(),
            source,
        })?;
    runtime.block_on(async move {
        let server = Server::bind(config).await?;
        let addr = server.local_addr()?;
        println!("strata-server listening on http://{addr} (v2 inference protocol)");
        for row in server.repository().index() {
            println!(
                "  model {} version {} {}{}",
                row.name,
                row.version.as_deref().unwrap_or("-"),
                row.state,
                if row.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", row.reason)
                }
            );
        }
        if embedded {
            println!("try:\n{}", example_curl(addr));
        }
        server.serve(termination_signal()).await
    })
}
