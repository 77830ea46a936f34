//! The model repository: which models exist, their versions and their state.
//!
//! Layout (Triton's): `ROOT/NAME/VERSION/model.onnx` with numeric versions, or a bare
//! `ROOT/NAME/model.onnx` (version 1), and an optional `ROOT/NAME/config.toml` or
//! `config.json` ([`ModelConfig`]). Without a root the repository serves the model embedded
//! in the binary. A model that fails to load is kept as unavailable with its reason, so the
//! others serve on. Load and unload swap a model's entry under a write lock: requests in
//! flight hold their own reference to the old version and finish on it.

use crate::config::ModelConfig;
use crate::error::{ApiError, ServerError};
use crate::metrics::Metrics;
use crate::served::ServedModel;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use strata_sched::{FairGate, ThreadPool};

/// The model compiled into the binary, served when no repository is given.
pub const EMBEDDED_MODEL_NAME: &str = "digits";

/// The embedded model's ONNX bytes (examples/models/digits.onnx).
pub const EMBEDDED_MODEL: &[u8] = include_bytes!("../../../examples/models/digits.onnx");

/// Where a model's files come from.
#[derive(Debug, Clone)]
enum Source {
    /// A folder of the repository.
    Folder(PathBuf),
    /// Bytes compiled into the binary.
    Embedded(&'static [u8]),
}

/// A model's state as the repository index reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    /// Every version loaded.
    Ready,
    /// Not servable, with the reason.
    Unavailable(String),
}

/// One model: its versions (newest last) and state.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// Loaded versions.
    pub versions: BTreeMap<u64, Arc<ServedModel>>,
    /// Ready, or why not.
    pub state: ModelState,
}

/// A row of `POST /v2/repository/index`.
#[derive(Debug, Serialize)]
pub struct IndexRow {
    /// Model name.
    pub name: String,
    /// Version (absent when none loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `READY` or `UNAVAILABLE`.
    pub state: &'static str,
    /// Why it is unavailable.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// All models the server knows.
#[derive(Debug)]
pub struct Repository {
    sources: RwLock<BTreeMap<String, Source>>,
    root: Option<PathBuf>,
    models: RwLock<BTreeMap<String, ModelEntry>>,
    gate: Arc<FairGate>,
    metrics: Arc<Metrics>,
    /// One thread pool per thread count, shared by the models configured with it, so that
    /// models running at once do not each bring their own workers.
    pools: Mutex<BTreeMap<usize, ThreadPool>>,
}

impl Repository {
    /// Scans `root` (or takes the embedded model) and loads every model.
    pub fn open(
        root: Option<&Path>,
        gate: Arc<FairGate>,
        metrics: Arc<Metrics>,
    ) -> Result<Repository, ServerError> {
        let sources = match root {
            Some(root) => scan(root)?,
            None => BTreeMap::from([(
                EMBEDDED_MODEL_NAME.to_string(),
                Source::Embedded(EMBEDDED_MODEL),
            )]),
        };
        let repo = Repository {
            sources: RwLock::new(sources),
            root: root.map(Path::to_path_buf),
            models: RwLock::new(BTreeMap::new()),
            gate,
            metrics,
            pools: Mutex::new(BTreeMap::new()),
        };
        let names: Vec<String> = repo.sources.read().keys().cloned().collect();
        for name in names {
            let entry = repo.load_entry(&name);
            if let ModelState::Unavailable(reason) = &entry.state {
                tracing::warn!(model = %name, %reason, "model not loaded");
            } else {
                tracing::info!(model = %name, versions = entry.versions.len(), "model ready");
            }
            repo.models.write().insert(name, entry);
        }
        Ok(repo)
    }

    /// The shared metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The model version a request names: the newest when `version` is `None`.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<Arc<ServedModel>, ApiError> {
        let models = self.models.read();
        let entry = models
            .get(name)
            .ok_or_else(|| ApiError::not_found(format!("unknown model '{name}'")))?;
        if let ModelState::Unavailable(reason) = &entry.state {
            return Err(ApiError::unavailable(format!(
                "model '{name}' is not ready: {reason}"
            )));
        }
        match version {
            None => entry.versions.values().next_back().cloned().ok_or_else(|| {
                ApiError::unavailable(format!("model '{name}' has no loaded version"))
            }),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .and_then(|v| entry.versions.get(&v).cloned())
                .ok_or_else(|| ApiError::not_found(format!("model '{name}' has no version '{v}'"))),
        }
    }

    /// The entry of `name`, ready or not.
    pub fn entry(&self, name: &str) -> Option<ModelEntry> {
        self.models.read().get(name).cloned()
    }

    /// Every model and version with its state.
    pub fn index(&self) -> Vec<IndexRow> {
        let mut rows = Vec::new();
        for (name, entry) in self.models.read().iter() {
            let (state, reason) = match &entry.state {
                ModelState::Ready => ("READY", String::new()),
                ModelState::Unavailable(r) => ("UNAVAILABLE", r.clone()),
            };
            if entry.versions.is_empty() {
                rows.push(IndexRow {
                    name: name.clone(),
                    version: None,
                    state,
                    reason: reason.clone(),
                });
            }
            for version in entry.versions.keys() {
                rows.push(IndexRow {
                    name: name.clone(),
                    version: Some(version.to_string()),
                    state,
                    reason: reason.clone(),
                });
            }
        }
        rows
    }

    /// Every loaded model version.
    pub fn served(&self) -> Vec<Arc<ServedModel>> {
        self.models
            .read()
            .values()
            .flat_map(|e| e.versions.values().cloned())
            .collect()
    }

    /// (Re)loads `name` from its source (rescanning the repository folder) and swaps it in.
    /// Blocking: call it off the async threads.
    pub fn load(&self, name: &str) -> Result<(), ApiError> {
        if let Some(root) = &self.root {
            let dir = root.join(name);
            if is_model_name(name) && dir.is_dir() {
                self.sources
                    .write()
                    .insert(name.to_string(), Source::Folder(dir));
            }
        }
        if !self.sources.read().contains_key(name) {
            return Err(ApiError::not_found(format!(
                "no model '{name}' in the repository"
            )));
        }
        let entry = self.load_entry(name);
        let result = match &entry.state {
            ModelState::Ready => Ok(()),
            ModelState::Unavailable(reason) => Err(ApiError::bad_request(format!(
                "failed to load model '{name}': {reason}"
            ))),
        };
        let old = self.models.write().insert(name.to_string(), entry);
        drop(old);
        result
    }

    /// Unloads `name`; requests in flight finish on the old version.
    pub fn unload(&self, name: &str) -> Result<(), ApiError> {
        let mut models = self.models.write();
        let entry = models
            .get_mut(name)
            .ok_or_else(|| ApiError::not_found(format!("unknown model '{name}'")))?;
        entry.versions.clear();
        entry.state = ModelState::Unavailable("unloaded".into());
        Ok(())
    }

    /// Stops every queue from taking requests; queued ones still run.
    pub fn close(&self) {
        for model in self.served() {
            model.close();
        }
    }

    /// Stops every queue after it drains. Blocking.
    pub fn shutdown(&self) {
        for model in self.served() {
            model.shutdown();
        }
    }

    fn load_entry(&self, name: &str) -> ModelEntry {
        let source = self.sources.read().get(name).cloned();
        let loaded = match source {
            Some(Source::Embedded(bytes)) => self
                .load_version(name, 1, bytes, ModelConfig::default())
                .map(|m| BTreeMap::from([(1, m)])),
            Some(Source::Folder(dir)) => self.load_folder(name, &dir),
            None => Err(format!("no model '{name}' in the repository")),
        };
        match loaded {
            Ok(versions) => ModelEntry {
                versions,
                state: ModelState::Ready,
            },
            Err(reason) => ModelEntry {
                versions: BTreeMap::new(),
                state: ModelState::Unavailable(reason),
            },
        }
    }

    fn load_folder(
        &self,
        name: &str,
        dir: &Path,
    ) -> Result<BTreeMap<u64, Arc<ServedModel>>, String> {
        let config = ModelConfig::from_dir(dir).map_err(|e| e.to_string())?;
        let files = version_files(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if files.is_empty() {
            return Err(format!(
                "{} holds no model.onnx (expected NAME/VERSION/model.onnx or NAME/model.onnx)",
                dir.display()
            ));
        }
        let mut versions = BTreeMap::new();
        for (version, path) in files {
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let model = self
                .load_version(name, version, &bytes, config.clone())
                .map_err(|e| format!("version {version}: {e}"))?;
            versions.insert(version, model);
        }
        Ok(versions)
    }

    fn load_version(
        &self,
        name: &str,
        version: u64,
        bytes: &[u8],
        config: ModelConfig,
    ) -> Result<Arc<ServedModel>, String> {
        let pool = self
            .pools
            .lock()
            .entry(config.threads)
            .or_insert_with(|| ThreadPool::new(config.threads))
            .clone();
        ServedModel::load(
            name,
            version,
            bytes,
            config,
            pool,
            self.gate.clone(),
            self.metrics.clone(),
        )
        .map(Arc::new)
    }
}

/// Model names are folder names: no separators or dot-dot, so a request cannot escape the
/// repository.
fn is_model_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\'])
}

/// The model folders under `root`.
fn scan(root: &Path) -> Result<BTreeMap<String, Source>, ServerError> {
    let error = |source| ServerError::Repository {
        path: root.to_path_buf(),
        source,
    };
    let mut sources = BTreeMap::new();
    for entry in std::fs::read_dir(root).map_err(error)? {
        let entry = entry.map_err(error)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && is_model_name(&name) && !name.starts_with('.') {
            sources.insert(name, Source::Folder(entry.path()));
        }
    }
    Ok(sources)
}

/// `(version, path)` of each model file in a model folder.
fn version_files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(version) = entry.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let path = entry.path().join("model.onnx");
        if path.is_file() {
            files.push((version, path));
        }
    }
    let bare = dir.join("model.onnx");
    if files.is_empty() && bare.is_file() {
        files.push((1, bare));
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_of_one_thread_count_share_one_pool() {
        let root = std::env::temp_dir().join(format!("strata-pools-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (name, threads) in [("a", 2), ("b", 2), ("c", 1)] {
            let dir = root.join(name).join("1");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("model.onnx"), EMBEDDED_MODEL).unwrap();
            let config = format!("threads = {threads}\n");
            std::fs::write(root.join(name).join("config.toml"), config).unwrap();
        }
        let repo = Repository::open(
            Some(&root),
            Arc::new(FairGate::new(1)),
            Arc::new(Metrics::default()),
        )
        .unwrap();
        assert_eq!(repo.served().len(), 3);
        let pools = repo.pools.lock();
        assert_eq!(pools.keys().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(pools[&2].threads(), 2);
        drop(pools);
        repo.shutdown();
        let _ = std::fs::remove_dir_all(&root);
    }
}
