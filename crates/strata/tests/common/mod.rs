//! Shared helpers for tests that run ONNX test cases: locating the test data that
//! `cargo xtask testdata` prepares, reading a case, comparing outputs by ONNX's rule, and
//! running a case with panics and hangs turned into failures.

#![allow(dead_code)]

pub mod proto;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;
use strata::{DType, Model, SessionOptions, Tensor, Value, ValueKind};

/// The test-data folder, or `None` (with a note) when it has not been prepared. When
/// `STRATA_REQUIRE_TESTDATA=1` (as `cargo xtask test` sets) a missing folder is a failure.
/// An input's declared dimensions, each symbolic one taken as 1.
pub fn declared_dims(info: &strata::IoInfo) -> Vec<usize> {
    info.dims
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|d| match d {
            strata::Dim::Known(n) => *n,
            strata::Dim::Symbol(_) => 1,
        })
        .collect()
}

pub fn testdata_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("STRATA_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata"));
    if dir.join("onnx-backend").is_dir() {
        return Some(dir);
    }
    if std::env::var("STRATA_REQUIRE_TESTDATA").as_deref() == Ok("1") {
        panic!(
            "test data missing at {}: run `cargo xtask testdata`",
            dir.display()
        );
    }
    eprintln!(
        "note: test data missing at {}; run `cargo xtask testdata` (skipping)",
        dir.display()
    );
    None
}

/// One test case: a model and its data sets.
#[derive(Debug, Clone)]
pub struct Case {
    /// Name as listed in expected-failure files: `<suite>/<case>`.
    pub name: String,
    /// The model file.
    pub model: PathBuf,
    /// Each data set: input files and expected output files, in order.
    pub data_sets: Vec<(Vec<PathBuf>, Vec<PathBuf>)>,
}

fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n = name
                .strip_prefix(prefix)?
                .strip_suffix(".pb")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

/// Cases laid out as ONNX backend tests: `<dir>/<case>/model.onnx` and
/// `<dir>/<case>/test_data_set_N/{input,output}_J.pb`.
pub fn cases_in(dir: &Path, suite: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for case_dir in entries {
        let model = case_dir.join("model.onnx");
        if !model.is_file() {
            continue;
        }
        let mut sets: Vec<PathBuf> = std::fs::read_dir(&case_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
            })
            .collect();
        sets.sort();
        cases.push(Case {
            name: format!(
                "{suite}/{}",
                case_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default()
            ),
            model,
            data_sets: sets
                .iter()
                .map(|s| (numbered(s, "input_"), numbered(s, "output_")))
                .collect(),
        });
    }
    cases
}

/// ONNX's closeness rule for one pair of floats.
pub fn close(actual: f64, expected: f64, rtol: f64, atol: f64) -> bool {
    if actual.is_nan() || expected.is_nan() {
        return actual.is_nan() && expected.is_nan();
    }
    if actual == expected {
        return true;
    }
    (actual - expected).abs() <= atol + rtol * expected.abs()
}

/// Compares two tensors: dtype and shape equal; floats by the ONNX rule, the rest exactly.
pub fn compare_tensors(
    actual: &Tensor,
    expected: &Tensor,
    rtol: f64,
    atol: f64,
) -> Result<(), String> {
    if actual.dtype() != expected.dtype() {
        return Err(format!(
            "dtype {} != expected {}",
            actual.dtype(),
            expected.dtype()
        ));
    }
    if actual.shape() != expected.shape() {
        return Err(format!(
            "shape {:?} != expected {:?}",
            actual.shape(),
            expected.shape()
        ));
    }
    let dtype = actual.dtype();
    if dtype.is_float() {
        let a = actual
            .cast(DType::F64)
            .map_err(|e| e.to_string())?
            .to_vec::<f64>()
            .map_err(|e| e.to_string())?;
        let e = expected
            .cast(DType::F64)
            .map_err(|e| e.to_string())?
            .to_vec::<f64>()
            .map_err(|e| e.to_string())?;
        let mut worst: Option<(usize, f64, f64)> = None;
        let mut bad = 0;
        for (i, (&x, &y)) in a.iter().zip(&e).enumerate() {
            if !close(x, y, rtol, atol) {
                bad += 1;
                let err = (x - y).abs();
                if worst.is_none_or(|(_, wx, wy)| err > (wx - wy).abs()) {
                    worst = Some((i, x, y));
                }
            }
        }
        if let Some((i, x, y)) = worst {
            return Err(format!(
                "{bad} of {} values differ; worst at {i}: {x} vs expected {y}",
                a.len()
            ));
        }
        return Ok(());
    }
    if dtype == DType::String {
        let a = actual.contiguous();
        let e = expected.contiguous();
        return if a.as_strings().map_err(|e| e.to_string())?
            == e.as_strings().map_err(|e| e.to_string())?
        {
            Ok(())
        } else {
            Err("strings differ".into())
        };
    }
    let a = actual.contiguous();
    let e = expected.contiguous();
    if a.raw_bytes().map_err(|e| e.to_string())? == e.raw_bytes().map_err(|e| e.to_string())? {
        Ok(())
    } else {
        Err(format!("{dtype} values differ: {a:?} vs expected {e:?}"))
    }
}

/// Compares two values of any kind.
pub fn compare_values(
    actual: &Value,
    expected: &Value,
    rtol: f64,
    atol: f64,
) -> Result<(), String> {
    match (actual, expected) {
        (Value::Tensor(a), Value::Tensor(e)) => compare_tensors(a, e, rtol, atol),
        (Value::Sequence(a), Value::Sequence(e)) => {
            if a.len() != e.len() {
                return Err(format!("sequence of {} != expected {}", a.len(), e.len()));
            }
            a.iter().zip(e).enumerate().try_for_each(|(i, (a, e))| {
                compare_tensors(a, e, rtol, atol).map_err(|m| format!("element {i}: {m}"))
            })
        }
        (Value::Optional(a), Value::Optional(e)) => match (a, e) {
            (None, None) => Ok(()),
            (Some(a), Some(e)) => compare_values(a, e, rtol, atol),
            _ => Err("optional presence differs".into()),
        },
        (a, e) => Err(format!(
            "got {} but expected {}",
            a.describe(),
            e.describe()
        )),
    }
}

/// Ops whose outputs come from a random generator. The reference values of cases using them
/// were drawn from numpy's RNG, which no engine reproduces, so only dtype and shape are
/// compared (as the ONNX backend runner does for these ops).
pub const RANDOM_OPS: [&str; 6] = [
    "Bernoulli",
    "Multinomial",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
];

/// Compares only dtypes and shapes (and sequence lengths, optional presence).
fn compare_structure(actual: &Value, expected: &Value) -> Result<(), String> {
    match (actual, expected) {
        (Value::Tensor(a), Value::Tensor(e)) => {
            if a.dtype() != e.dtype() || a.shape() != e.shape() {
                return Err(format!(
                    "got {} {:?}, expected {} {:?}",
                    a.dtype(),
                    a.shape(),
                    e.dtype(),
                    e.shape()
                ));
            }
            Ok(())
        }
        (Value::Sequence(a), Value::Sequence(e)) if a.len() == e.len() => {
            a.iter().zip(e).try_for_each(|(a, e)| {
                compare_structure(&Value::Tensor(a.clone()), &Value::Tensor(e.clone()))
            })
        }
        (Value::Optional(a), Value::Optional(e)) => match (a, e) {
            (None, None) => Ok(()),
            (Some(a), Some(e)) => compare_structure(a, e),
            _ => Err("optional presence differs".into()),
        },
        (a, e) => Err(format!(
            "got {} but expected {}",
            a.describe(),
            e.describe()
        )),
    }
}

/// Runs every data set of a case; returns the first mismatch or error. Outputs of models
/// with a [`RANDOM_OPS`] op are checked for dtype and shape only.
pub fn run_case(case: &Case, threads: usize) -> Result<(), String> {
    let model = Model::load(&case.model).map_err(|e| format!("load: {e}"))?;
    let random = model
        .op_histogram()
        .keys()
        .any(|op| RANDOM_OPS.contains(&op.as_str()));
    let session = model
        .session(SessionOptions::default().with_threads(threads))
        .map_err(|e| format!("session: {e}"))?;
    let inputs_info = model.inputs();
    let outputs_info = model.outputs();
    for (set, (inputs, outputs)) in case.data_sets.iter().enumerate() {
        let mut named = Vec::new();
        for (info, file) in inputs_info.iter().zip(inputs) {
            let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let value = strata::io::read_value_bytes(&bytes, info.kind)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            named.push((info.name.clone(), value));
        }
        let result = session.run_values(named).map_err(|e| format!("run: {e}"))?;
        for ((info, file), (_, actual)) in outputs_info.iter().zip(outputs).zip(result.iter()) {
            let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
            let kind = if info.kind == ValueKind::Unknown {
                ValueKind::Tensor
            } else {
                info.kind
            };
            let expected = strata::io::read_value_bytes(&bytes, kind)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            let compared = if random {
                compare_structure(actual, &expected)
            } else {
                compare_values(actual, &expected, 1e-3, 1e-7)
            };
            compared.map_err(|m| format!("data set {set}, output '{}': {m}", info.name))?;
        }
    }
    Ok(())
}

/// Runs `f`, turning a panic into an error carrying the panic message.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => Err(format!(
            "panic: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

/// Stack size of [`run_with_timeout`]'s worker threads (debug builds of deep recursions
/// need more than the 2 MiB default).
const WORKER_STACK: usize = 16 << 20;

/// Runs `f` ([`guarded`]) on a worker thread and waits at most `limit` for it. A panic is
/// an error naming it; running past `limit` is the error `timeout after N s`, and the
/// worker is then left to finish (or not) in the background, detached.
pub fn run_with_timeout<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("case-worker".into())
        .stack_size(WORKER_STACK)
        .spawn(move || {
            // The receiver is gone only after a timeout; nobody wants the result then.
            let _ = tx.send(guarded(f));
        })
        .map_err(|e| format!("spawning a worker thread: {e}"))?;
    match rx.recv_timeout(limit) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(format!("timeout after {} s", limit.as_secs_f64()))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("worker thread died".into()),
    }
}
