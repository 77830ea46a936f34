//! The test models of `cargo xtask testdata`: `testdata/models/<name>/model.onnx` with
//! `test_data_set_0/input_<i>.pb` and `output_<i>.pb` computed by onnxruntime.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use strata_tensor::Tensor;

/// Every model `cargo xtask testdata` generates, smallest workloads first.
pub const ALL_MODELS: &[&str] = &[
    "light_squeezenet",
    "light_shufflenet",
    "mobilenetv2",
    "bert_encoder",
    "light_densenet121",
    "light_inception_v1",
    "light_inception_v2",
    "light_resnet50",
    "light_bvlc_alexnet",
    "light_zfnet512",
    "light_vgg19",
];

/// The models of a quick run: one small CNN, one mobile CNN, one transformer.
pub const QUICK_MODELS: &[&str] = &["light_squeezenet", "mobilenetv2", "bert_encoder"];

/// The test-data root: `$STRATA_TESTDATA` when set, else `testdata/` at the workspace root.
pub fn default_dir() -> PathBuf {
    match std::env::var_os("STRATA_TESTDATA") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the benches crate lives one level below the workspace root")
            .join("testdata"),
    }
}

/// One model with its reference inputs and outputs.
#[derive(Debug, Clone)]
pub struct TestCase {
    /// The folder name, e.g. `light_squeezenet`.
    pub name: String,
    /// Path of `model.onnx`.
    pub model_path: PathBuf,
    /// The reference inputs in graph-input order.
    pub inputs: Vec<Tensor>,
    /// The reference (onnxruntime) outputs in graph-output order.
    pub outputs: Vec<Tensor>,
    /// The folder holding `input_<i>.pb` and `output_<i>.pb`.
    pub data_dir: PathBuf,
}

impl TestCase {
    /// Loads `<root>/models/<name>`.
    pub fn load(root: &Path, name: &str) -> Result<TestCase> {
        Self::load_dir(&root.join("models").join(name))
    }

    /// Loads the model folder `dir` (`model.onnx` and `test_data_set_0/`).
    pub fn load_dir(dir: &Path) -> Result<TestCase> {
        let model_path = dir.join("model.onnx");
        if !model_path.is_file() {
            bail!(
                "{} not found (run `cargo xtask testdata`)",
                model_path.display()
            );
        }
        let set = dir.join("test_data_set_0");
        let inputs = read_numbered(&set, "input")?;
        let outputs = read_numbered(&set, "output")?;
        if outputs.is_empty() {
            bail!("{} has no output_0.pb", set.display());
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string());
        Ok(TestCase {
            name,
            model_path,
            inputs,
            outputs,
            data_dir: set,
        })
    }

    /// Paths of the input files, in graph-input order.
    pub fn input_paths(&self) -> Vec<PathBuf> {
        numbered_paths(&self.data_dir, "input", self.inputs.len())
    }

    /// Paths of the reference output files, in graph-output order.
    pub fn output_paths(&self) -> Vec<PathBuf> {
        numbered_paths(&self.data_dir, "output", self.outputs.len())
    }
}

fn numbered_paths(dir: &Path, prefix: &str, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|i| dir.join(format!("{prefix}_{i}.pb")))
        .collect()
}

/// Reads `<dir>/<prefix>_0.pb`, `<prefix>_1.pb`, ... until the first missing index.
fn read_numbered(dir: &Path, prefix: &str) -> Result<Vec<Tensor>> {
    let mut tensors = Vec::new();
    loop {
        let path = dir.join(format!("{prefix}_{}.pb", tensors.len()));
        if !path.is_file() {
            return Ok(tensors);
        }
        tensors.push(
            strata::io::read_tensor_file(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        );
    }
}
