//! Runs the ONNX backend test data bundled with the `onnx` Python package (light models,
//! pytorch-converted, pytorch-operator and simple cases) and the models materialized with
//! real-looking weights (references from onnxruntime) through the facade, comparing every
//! output by ONNX's rule |a-e| <= 1e-7 + 1e-3*|e|.
//!
//! Known failures are listed with their reasons in `tests/expected_failures.txt`; the test
//! fails on any other failure and reports listed cases that now pass.

mod common;

use common::{cases_in, compare_tensors, guarded, run_case, testdata_dir, Case};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;
use strata::{Model, SessionOptions, Tensor};

const THREADS: usize = 2;

fn expected_failures() -> BTreeMap<String, String> {
    let text = include_str!("expected_failures.txt");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((name, reason)) => (name.to_string(), reason.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// A light model: random inputs (the expected output does not depend on them: every weight
/// is the constant 0.02) and one expected output file.
fn run_light_model(model_path: &Path, expected_path: &Path) -> Result<(), String> {
    let model = Model::load(model_path).map_err(|e| format!("load: {e}"))?;
    let session = model
        .session(SessionOptions::default().with_threads(THREADS))
        .map_err(|e| format!("session: {e}"))?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut inputs = Vec::new();
    for info in model.inputs() {
        let shape = common::declared_dims(&info);
        let n: usize = shape.iter().product();
        let data: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        inputs.push((
            info.name,
            Tensor::from_vec(data, &shape).map_err(|e| e.to_string())?,
        ));
    }
    let outputs = session.run(inputs).map_err(|e| format!("run: {e}"))?;
    let expected = strata::io::read_tensor_file(expected_path).map_err(|e| e.to_string())?;
    let (name, actual) = outputs.iter().next().ok_or("no output")?;
    let actual = actual.as_tensor().ok_or("output is not a tensor")?;
    compare_tensors(actual, &expected, 1e-3, 1e-7).map_err(|m| format!("output '{name}': {m}"))
}

fn light_cases(dir: &Path) -> Vec<(String, std::path::PathBuf, std::path::PathBuf)> {
    let mut models: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    models
        .into_iter()
        .map(|m| {
            let stem = m
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let expected = dir.join(format!("{stem}_output_0.pb"));
            (format!("light/{stem}"), m, expected)
        })
        .collect()
}

#[test]
fn onnx_backend_test_data() {
    let Some(root) = testdata_dir() else { return };
    let backend = root.join("onnx-backend");
    let known = expected_failures();

    let mut results: Vec<(String, bool, Result<(), String>)> = Vec::new();
    for (name, model, expected) in light_cases(&backend.join("light")) {
        let r = guarded(|| run_light_model(&model, &expected));
        println!("{:<60} {}", name, if r.is_ok() { "ok" } else { "FAIL" });
        results.push((name, true, r));
    }
    let suites = ["pytorch-converted", "pytorch-operator", "simple"];
    let cases: Vec<Case> = suites
        .iter()
        .flat_map(|s| cases_in(&backend.join(s), s))
        .collect();
    for case in &cases {
        let r = guarded(|| run_case(case, THREADS));
        println!(
            "{:<60} {}",
            case.name,
            if r.is_ok() { "ok" } else { "FAIL" }
        );
        results.push((case.name.clone(), false, r));
    }
    report(&results, &known, 0.95);
}

#[test]
fn materialized_models_match_onnxruntime() {
    let Some(root) = testdata_dir() else { return };
    let cases = cases_in(&root.join("models"), "models");
    assert!(
        cases.len() >= 11,
        "expected the 9 light models, mobilenetv2 and bert_encoder; found {}",
        cases.len()
    );
    let mut results = Vec::new();
    for case in &cases {
        let r = guarded(|| run_case(case, THREADS));
        println!(
            "{:<60} {}",
            case.name,
            if r.is_ok() { "ok" } else { "FAIL" }
        );
        results.push((case.name.clone(), true, r));
    }
    report(&results, &BTreeMap::new(), 1.0);
}

/// Prints failures, fails on regressions (failures not listed, or failures of cases that must
/// pass), and reports listed cases that now pass.
fn report(
    results: &[(String, bool, Result<(), String>)],
    known: &BTreeMap<String, String>,
    min_rate: f64,
) {
    let mut regressions = Vec::new();
    let mut now_passing = Vec::new();
    let (mut optional_total, mut optional_passed) = (0, 0);
    for (name, must_pass, result) in results {
        if !must_pass {
            optional_total += 1;
        }
        match result {
            Ok(()) => {
                if !must_pass {
                    optional_passed += 1;
                }
                if known.contains_key(name) {
                    now_passing.push(name.clone());
                }
            }
            Err(reason) => {
                println!("FAILED {name}: {reason}");
                if *must_pass || !known.contains_key(name) {
                    regressions.push(format!("{name}: {reason}"));
                }
            }
        }
    }
    if !now_passing.is_empty() {
        println!(
            "now passing, remove from tests/expected_failures.txt: {}",
            now_passing.join(", ")
        );
    }
    println!("{optional_passed}/{optional_total} optional cases pass");
    assert!(
        regressions.is_empty(),
        "{} regressions:\n{}",
        regressions.len(),
        regressions.join("\n")
    );
    if optional_total > 0 {
        let rate = optional_passed as f64 / optional_total as f64;
        assert!(rate >= min_rate, "pass rate {rate:.3} below {min_rate}");
    }
}
