//! The `strata` binary end to end on the digits example: inspect, run, bench, ops and demo,
//! and the error cases, each of which must exit non-zero with one `error:` line naming the
//! culprit.

use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use strata::Tensor;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model() -> String {
    root()
        .join("examples/models/digits.onnx")
        .display()
        .to_string()
}

fn sample(i: usize) -> String {
    root()
        .join(format!("examples/models/digits_samples/sample_{i}.npy"))
        .display()
        .to_string()
}

fn label_of(i: usize) -> i64 {
    let labels: Json = serde_json::from_str(
        &std::fs::read_to_string(root().join("examples/models/digits_samples/labels.json"))
            .unwrap(),
    )
    .unwrap();
    labels[format!("sample_{i}.npy")].as_i64().unwrap()
}

/// A scratch folder of its own for one test.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-cli-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run strata")
}

/// Runs a command that must succeed; returns its stdout.
fn ok(args: &[&str]) -> String {
    let out = strata(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "strata {args:?} failed ({:?}): {stderr}",
        out.status
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail with exactly one `error:` line holding every needle.
fn fails(args: &[&str], needles: &[&str]) -> String {
    let out = strata(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "strata {args:?} succeeded");
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("internal error"),
        "{args:?}: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: expected one line, got {stderr:?}"
    );
    assert!(lines[0].starts_with("error: "), "{args:?}: {stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{args:?}: '{needle}' not in {stderr}"
        );
    }
    lines[0].to_string()
}

// ---------------------------------------------------------------------------------------------
// inspect

#[test]
fn inspect_text() {
    let out = ok(&["inspect", &model()]);
    for needle in [
        "ir version  8",
        "opsets      ai.onnx:17",
        "producer    strata",
        "pixels",
        "[batch, 64]",
        "probabilities",
        "[batch, 10]",
        "label",
        "int64",
        "[batch]",
        "nodes       7",
        "parameters  4810",
        "flops",
        "MatMul",
        "Softmax",
    ] {
        assert!(out.contains(needle), "'{needle}' missing from:\n{out}");
    }
    assert!(!out.contains("unsupported"), "{out}");
    assert!(!out.contains("optimized graph"), "{out}");
}

#[test]
fn inspect_json() {
    let out = ok(&["inspect", &model(), "--json"]);
    let j: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(j["ir_version"], 8);
    assert_eq!(j["opsets"][""], 17);
    assert!(j["producer"]["name"]
        .as_str()
        .unwrap()
        .starts_with("strata"));
    assert_eq!(j["graph_name"], "digits_mlp");

    let inputs = j["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0]["name"], "pixels");
    assert_eq!(inputs[0]["kind"], "tensor");
    assert_eq!(inputs[0]["dtype"], "float32");
    assert_eq!(inputs[0]["dims"], serde_json::json!(["batch", 64]));

    let outputs = j["outputs"].as_array().unwrap();
    let names: Vec<&str> = outputs
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["probabilities", "label"]);
    assert_eq!(outputs[0]["dtype"], "float32");
    assert_eq!(outputs[0]["dims"], serde_json::json!(["batch", 10]));
    assert_eq!(outputs[1]["dtype"], "int64");
    assert_eq!(outputs[1]["dims"], serde_json::json!(["batch"]));

    assert_eq!(j["nodes"], 7);
    assert_eq!(
        j["op_histogram"],
        serde_json::json!({"Add": 2, "ArgMax": 1, "MatMul": 2, "Relu": 1, "Softmax": 1})
    );
    assert_eq!(j["parameters"], 4810);
    assert_eq!(j["parameter_bytes"], 4810 * 4);
    // Two matmuls alone: 2 * (64*64 + 64*10) multiply-adds for batch 1.
    let flops = j["flops"].as_u64().expect("flops is a number");
    assert!(flops >= 2 * (64 * 64 + 64 * 10), "{flops}");
    assert_eq!(j["unsupported"], serde_json::json!([]));
    assert!(j.get("optimized").is_none());

    // A bound batch size scales the estimate.
    let j8: Json =
        serde_json::from_str(&ok(&["inspect", &model(), "--json", "--dim", "batch=8"])).unwrap();
    assert!(j8["flops"].as_u64().unwrap() >= 8 * 2 * (64 * 64 + 64 * 10));
}

#[test]
fn inspect_optimized() {
    let out = ok(&["inspect", &model(), "--optimized"]);
    assert!(out.contains("optimized graph ("), "{out}");
    // The fusion passes merge MatMul, the bias Add and the Relu into one node, whose
    // constant weights are then packed into the op (input 1 disconnected, shown empty).
    assert!(
        out.contains("MatMul+Add+Relu(pixels, , hidden.bias) -> hidden"),
        "{out}"
    );
    assert!(out.contains("matmul-weight-prepacking"), "{out}");

    let j: Json =
        serde_json::from_str(&ok(&["inspect", &model(), "--json", "--optimized"])).unwrap();
    let opt = &j["optimized"];
    let nodes = opt["nodes"].as_u64().unwrap();
    assert!((1..=7).contains(&nodes), "{opt}");
    assert_eq!(opt["graph"].as_array().unwrap().len() as u64, nodes);
    assert!(opt["passes"].is_array());
    assert_eq!(
        opt["op_histogram"]["MatMul+Add+Relu"].as_u64(),
        Some(1),
        "{opt}"
    );
    assert!(opt["passes"]
        .as_array()
        .unwrap()
        .contains(&Json::from("activation-fusion")));
    let last = &opt["graph"].as_array().unwrap()[nodes as usize - 1];
    assert!(last["op"].is_string() && last["outputs"].is_array());
}

// ---------------------------------------------------------------------------------------------
// run

#[test]
fn run_with_named_and_positional_inputs() {
    let named = format!("pixels={}", sample(0));
    let out = ok(&["run", &model(), "-i", &named]);
    assert!(out.contains("probabilities: float32 [1, 10]"), "{out}");
    assert!(out.contains("label: int64 [1]"), "{out}");

    let out = ok(&["run", &model(), "--input", &sample(1)]);
    assert!(out.contains("probabilities: float32 [1, 10]"), "{out}");
}

#[test]
fn run_with_random_inputs_and_bound_dims() {
    let out = ok(&[
        "run",
        &model(),
        "--random",
        "--seed",
        "1",
        "--dim",
        "batch=3",
    ]);
    assert!(out.contains("probabilities: float32 [3, 10]"), "{out}");
    assert!(out.contains("label: int64 [3]"), "{out}");

    // Same seed, same outputs; another seed, other outputs.
    let run = |seed: &str, name: &str| {
        let dir = scratch_dir(name);
        let d = dir.display().to_string();
        ok(&[
            "run",
            &model(),
            "--random",
            "--seed",
            seed,
            "--dim",
            "batch=3",
            "--output-dir",
            &d,
        ]);
        let t = strata::io::npy::read(dir.join("probabilities.npy")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        t.to_vec::<f32>().unwrap()
    };
    let a = run("1", "seed1a");
    assert_eq!(a.len(), 30);
    assert_eq!(a, run("1", "seed1b"));
    assert_ne!(a, run("2", "seed2"));
}

fn manifest(dir: &Path) -> Vec<Json> {
    let j: Json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    j["outputs"].as_array().unwrap().clone()
}

#[test]
fn run_writes_npy_outputs_and_a_manifest() {
    let dir = scratch_dir("npy");
    let d = dir.display().to_string();
    let input = format!("pixels={}", sample(2));
    let out = ok(&["run", &model(), "-i", &input, "--output-dir", &d]);
    assert!(out.contains("outputs written to"), "{out}");

    let entries = manifest(&dir);
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[0],
        serde_json::json!({"name": "probabilities", "file": "probabilities.npy", "dtype": "float32", "shape": [1, 10]})
    );
    assert_eq!(
        entries[1],
        serde_json::json!({"name": "label", "file": "label.npy", "dtype": "int64", "shape": [1]})
    );
    let label = strata::io::npy::read(dir.join("label.npy")).unwrap();
    assert_eq!(label.to_vec::<i64>().unwrap(), [label_of(2)]);
    let probs = strata::io::npy::read(dir.join("probabilities.npy")).unwrap();
    let p = probs.to_vec::<f32>().unwrap();
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    let argmax = (0..10).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
    assert_eq!(argmax as i64, label_of(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_writes_pb_outputs_readable_by_the_library() {
    let dir = scratch_dir("pb");
    let d = dir.display().to_string();
    let input = format!("pixels={}", sample(3));
    ok(&[
        "run",
        &model(),
        "-i",
        &input,
        "--output-dir",
        &d,
        "--output-format",
        "pb",
    ]);
    let entries = manifest(&dir);
    let files: Vec<&str> = entries
        .iter()
        .map(|e| e["file"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["probabilities.pb", "label.pb"]);
    let label: Tensor = strata::io::read_tensor_file(dir.join("label.pb")).unwrap();
    assert_eq!(label.dtype(), strata::DType::I64);
    assert_eq!(label.to_vec::<i64>().unwrap(), [label_of(3)]);
    let probs = strata::io::read_tensor_file(dir.join("probabilities.pb")).unwrap();
    assert_eq!(probs.shape(), [1, 10]);

    // The same run through the library gives the same numbers.
    let model = strata::Model::load(model()).unwrap();
    let session = model
        .session(strata::SessionOptions::default().with_threads(1))
        .unwrap();
    let pixels = strata::io::npy::read(sample(3)).unwrap();
    let expected = session.run([("pixels", pixels)]).unwrap();
    assert_eq!(
        probs.to_vec::<f32>().unwrap(),
        expected
            .get("probabilities")
            .unwrap()
            .to_vec::<f32>()
            .unwrap()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The digits model with a byte-for-byte same-length substitution (keeps the protobuf valid).
fn patched_model(dir: &Path, from: &[u8], to: &[u8]) -> String {
    assert_eq!(from.len(), to.len());
    let bytes = std::fs::read(model()).unwrap();
    let hits = bytes.windows(from.len()).filter(|w| *w == from).count();
    assert!(hits > 0);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let path = dir.join("patched.onnx");
    std::fs::write(&path, out).unwrap();
    path.display().to_string()
}

#[test]
fn run_sanitizes_output_file_names() {
    let dir = scratch_dir("sanitize");
    // Rename the output "label" to "lb:/x" everywhere it appears.
    let patched = patched_model(&dir, b"label", b"lb:/x");
    let out_dir = dir.join("out");
    let d = out_dir.display().to_string();
    ok(&[
        "run",
        &patched,
        "--random",
        "--dim",
        "batch=2",
        "--output-dir",
        &d,
    ]);
    let entries = manifest(&out_dir);
    assert_eq!(entries[1]["name"], "lb:/x");
    assert_eq!(entries[1]["file"], "lb__x.npy");
    assert_eq!(entries[1]["shape"], serde_json::json!([2]));
    assert!(out_dir.join("lb__x.npy").is_file());
    assert!(strata::io::npy::read(out_dir.join("lb__x.npy")).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// bench, ops, demo

#[test]
fn bench_json() {
    let out = ok(&[
        "bench",
        &model(),
        "--runs",
        "3",
        "--warmup",
        "1",
        "--json",
        "--threads",
        "1",
    ]);
    let j: Json = serde_json::from_str(&out).unwrap();
    for key in ["load_ms", "first_run_ms", "min_ms", "median_ms", "p90_ms"] {
        let v = j[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {j}"));
        assert!(v >= 0.0 && v.is_finite(), "{key} = {v}");
    }
    assert!(j["min_ms"].as_f64() <= j["median_ms"].as_f64());
    assert!(j["median_ms"].as_f64() <= j["p90_ms"].as_f64());
    assert_eq!(j["runs"], 3);
    assert_eq!(j["threads"], 1);

    let text = ok(&["bench", &model(), "--runs", "2", "--warmup", "0"]);
    assert!(text.contains("median") && text.contains("p90"), "{text}");
    fails(&["bench", &model(), "--runs", "0"], &["--runs"]);
}

#[test]
fn ops_lists_the_cpu_kernels() {
    let out = ok(&["ops"]);
    for op in ["Conv ", "MatMul ", "Softmax ", "Relu ", "ArgMax "] {
        assert!(out.contains(op), "{op} missing");
    }
    let last = out.lines().last().unwrap();
    let count: usize = last.strip_suffix(" ops").unwrap().parse().unwrap();
    assert_eq!(count, out.lines().count() - 1);

    let j: Json = serde_json::from_str(&ok(&["ops", "--json"])).unwrap();
    let map = j.as_object().unwrap();
    assert_eq!(map.len(), count);
    assert!(map["Conv"].as_array().is_some_and(|r| !r.is_empty()));
}

#[test]
fn demo_classifies_every_sample() {
    let out = ok(&["demo", "--threads", "1"]);
    assert!(out.contains("5/5 samples classified correctly"), "{out}");
    assert!(!out.contains("WRONG"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// errors

#[test]
fn missing_model_file() {
    let line = fails(&["inspect", "no/such/model.onnx"], &["no/such/model.onnx"]);
    // The OS reason is printed once, not again for the error's source.
    assert_eq!(line.matches("os error").count(), 1, "{line}");
    fails(
        &["run", "no/such/model.onnx", "--random"],
        &["no/such/model.onnx"],
    );
    fails(&["bench", "no/such/model.onnx"], &["no/such/model.onnx"]);
}

#[test]
fn non_onnx_file() {
    let dir = scratch_dir("not-onnx");
    let path = dir.join("notes.onnx");
    std::fs::write(&path, "these are some notes, not a model\n").unwrap();
    let p = path.display().to_string();
    fails(&["inspect", &p], &["notes.onnx", "ONNX"]);
    fails(&["run", &p, "--random"], &["notes.onnx"]);
    // An .npy file given as the model.
    fails(&["inspect", &sample(0)], &["sample_0.npy"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_input_name() {
    let spec = format!("pixelz={}", sample(0));
    fails(&["run", &model(), "-i", &spec], &["pixelz", "pixels"]);
}

#[test]
fn missing_input() {
    fails(&["run", &model()], &["missing input 'pixels'"]);
}

#[test]
fn missing_input_file() {
    fails(
        &["run", &model(), "-i", "pixels=no/such/input.npy"],
        &["no/such/input.npy"],
    );
    fails(
        &["run", &model(), "-i", "pixels=input.txt"],
        &["input.txt", ".npy or .pb"],
    );
}

#[test]
fn wrong_input_dtype() {
    let dir = scratch_dir("dtype");
    let path = dir.join("pixels_f64.npy");
    let t = strata::io::npy::read(sample(0)).unwrap();
    strata::io::npy::write(&path, &t.cast(strata::DType::F64).unwrap()).unwrap();
    let spec = format!("pixels={}", path.display());
    fails(
        &["run", &model(), "-i", &spec],
        &["pixels", "float32", "float64"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wrong_input_shape() {
    let dir = scratch_dir("shape");
    let path = dir.join("short.npy");
    strata::io::npy::write(
        &path,
        &Tensor::from_vec(vec![0.0f32; 63], &[1, 63]).unwrap(),
    )
    .unwrap();
    let spec = format!("pixels={}", path.display());
    fails(
        &["run", &model(), "-i", &spec],
        &["pixels", "[batch, 64]", "[1, 63]"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn too_many_positional_inputs() {
    fails(
        &["run", &model(), "-i", &sample(0), "-i", &sample(1)],
        &["2 inputs given", "has 1"],
    );
}

#[test]
fn bad_dim_binding() {
    fails(
        &["run", &model(), "--random", "--dim", "batch"],
        &["--dim 'batch'"],
    );
    fails(
        &["run", &model(), "--random", "--dim", "batch=many"],
        &["'many'"],
    );
}

#[test]
fn unsupported_op() {
    let dir = scratch_dir("unsupported");
    // The Relu node becomes an op no kernel implements.
    let patched = patched_model(&dir, b"Relu", b"Fncy");
    fails(
        &["run", &patched, "--random"],
        &["hidden.relu", "Fncy", "unsupported"],
    );
    fails(
        &["bench", &patched, "--runs", "1"],
        &["hidden.relu", "Fncy"],
    );
    // inspect still works and lists it.
    let out = ok(&["inspect", &patched]);
    assert!(out.contains("unsupported node 'hidden.relu'"), "{out}");
    let j: Json = serde_json::from_str(&ok(&["inspect", &patched, "--json"])).unwrap();
    let unsupported = j["unsupported"].as_array().unwrap();
    assert_eq!(unsupported.len(), 1);
    assert!(unsupported[0].as_str().unwrap().contains("Fncy"));
    assert!(j["flops"].is_null());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn usage_errors_exit_with_2() {
    let out = strata(&["run"]);
    assert_eq!(out.status.code(), Some(2));
    let out = strata(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = strata(&["--help"]);
    assert!(out.status.success());
}
