//! Configuration: the server's own settings ([`ServerConfig`], from flags or a TOML/JSON
//! file) and each model's serving settings ([`ModelConfig`], from `config.toml` or
//! `config.json` in the model's folder). Unknown keys are errors, so typos do not pass
//! silently.

use crate::error::ServerError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use strata_sched::BatchPolicy;

/// Limits that protect the server from oversized or slow requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Most elements in one input tensor.
    pub max_tensor_elements: usize,
    /// Longest an inference request may take, queueing included, in milliseconds.
    pub request_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 << 20,
            max_tensor_elements: 16 << 20,
            request_timeout_ms: 60_000,
        }
    }
}

impl Limits {
    /// The request time limit.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// The server's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on (0: any free port).
    pub port: u16,
    /// Folder of models in Triton's layout; `None` serves the embedded default model.
    pub model_repository: Option<PathBuf>,
    /// Batch executions running at once across all models (0: one per core).
    pub compute_slots: usize,
    /// Request limits.
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8000,
            model_repository: None,
            compute_slots: 0,
            limits: Limits::default(),
        }
    }
}

impl ServerConfig {
    /// Reads a TOML (`.toml`) or JSON (other extensions) config file.
    pub fn from_file(path: &Path) -> Result<Self, ServerError> {
        parse_file(path)
    }

    /// The number of concurrent batch executions.
    pub fn compute_slots(&self) -> usize {
        if self.compute_slots > 0 {
            return self.compute_slots;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// Dynamic batching settings of a model (Triton's `dynamic_batching` block).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamicBatching {
    /// Whether requests are stacked at all.
    pub enabled: bool,
    /// Batch sizes dispatched without waiting for more requests.
    pub preferred_batch_size: Vec<usize>,
    /// Longest a request waits for company, in microseconds.
    pub max_queue_delay_microseconds: u64,
    /// Number of priority levels (1 is served first).
    pub priority_levels: u32,
    /// Level of requests that name none.
    pub default_priority_level: u32,
    /// Longest a request may wait in the queue, in microseconds (0: no limit).
    pub default_queue_timeout_microseconds: u64,
    /// Most requests waiting; more are refused with 429.
    pub max_queue_size: usize,
}

impl Default for DynamicBatching {
    fn default() -> Self {
        DynamicBatching {
            enabled: true,
            preferred_batch_size: Vec::new(),
            max_queue_delay_microseconds: 0,
            priority_levels: 1,
            default_priority_level: 1,
            default_queue_timeout_microseconds: 0,
            max_queue_size: 1024,
        }
    }
}

/// A model's serving settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Most rows in one execution (0: the model does not batch; requests run one by one).
    pub max_batch_size: usize,
    /// Request queueing and stacking.
    pub dynamic_batching: DynamicBatching,
    /// Executions of this model that may run at once.
    pub instances: usize,
    /// Threads each execution may use (0: one per core).
    pub threads: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            max_batch_size: 8,
            dynamic_batching: DynamicBatching::default(),
            instances: 1,
            threads: 1,
        }
    }
}

impl ModelConfig {
    /// The config in `dir` (`config.toml` or `config.json`), or the default.
    pub fn from_dir(dir: &Path) -> Result<Self, ServerError> {
        for name in ["config.toml", "config.json"] {
            let path = dir.join(name);
            if path.is_file() {
                return parse_file(&path);
            }
        }
        Ok(ModelConfig::default())
    }

    /// The batcher policy this config asks for; `batchable` says whether the model's inputs
    /// have a free batch dimension.
    pub fn batch_policy(&self, batchable: bool) -> BatchPolicy {
        let db = &self.dynamic_batching;
        let stack = batchable && db.enabled && self.max_batch_size > 1;
        BatchPolicy {
            max_batch_size: if stack { self.max_batch_size } else { 1 },
            preferred_batch_sizes: db.preferred_batch_size.clone(),
            max_queue_delay: Duration::from_micros(db.max_queue_delay_microseconds),
            queue_capacity: db.max_queue_size,
            priority_levels: db.priority_levels,
            default_priority: db.default_priority_level,
            default_queue_timeout: (db.default_queue_timeout_microseconds > 0)
                .then(|| Duration::from_micros(db.default_queue_timeout_microseconds)),
            instances: self.instances,
        }
    }
}

fn parse_file<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ServerError> {
    let error = |message: String| ServerError::Config {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    if path.extension().is_some_and(|e| e == "toml") {
        toml::from_str(&text).map_err(|e| error(e.to_string()))
    } else {
        serde_json::from_str(&text).map_err(|e| error(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_config_from_toml_and_json() {
        let dir = std::env::temp_dir().join(format!("strata-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.toml"),
            "max_batch_size = 4\ninstances = 2\n[dynamic_batching]\npreferred_batch_size = [4]\nmax_queue_delay_microseconds = 500\npriority_levels = 2\n",
        )
        .unwrap();
        let c = ModelConfig::from_dir(&dir).unwrap();
        assert_eq!(c.max_batch_size, 4);
        let p = c.batch_policy(true);
        assert_eq!(p.max_batch_size, 4);
        assert_eq!(p.max_queue_delay, Duration::from_micros(500));
        assert_eq!(p.priority_levels, 2);
        assert_eq!(p.instances, 2);
        assert_eq!(c.batch_policy(false).max_batch_size, 1);

        std::fs::remove_file(dir.join("config.toml")).unwrap();
        std::fs::write(dir.join("config.json"), r#"{"max_batch_size": 0}"#).unwrap();
        assert_eq!(
            ModelConfig::from_dir(&dir)
                .unwrap()
                .batch_policy(true)
                .max_batch_size,
            1
        );

        std::fs::write(dir.join("config.json"), r#"{"max_batch_sise": 0}"#).unwrap();
        let e = ModelConfig::from_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("max_batch_sise"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn server_config_defaults() {
        let c: ServerConfig =
            toml::from_str("port = 9000\n[limits]\nmax_body_bytes = 10\n").unwrap();
        assert_eq!(c.port, 9000);
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.limits.max_body_bytes, 10);
        assert!(c.compute_slots() >= 1);
    }
}
