//! Compatibility with the real v2 client: runs tests/python/tritonclient_check.py
//! (tritonclient[http], installed in the project venv by `cargo xtask testdata`) against a
//! server on an ephemeral port and compares its numbers with the facade's output.
//!
//! The interpreter comes from `STRATA_PYENV_PYTHON` (set by `cargo xtask test`); without it
//! the test is skipped, unless `STRATA_REQUIRE_TESTDATA=1`, which makes it fail.

mod common;

use common::{digit_pixels, fixture, TempRepo, TestServer};
use serde_json::{json, Value as Json};
use std::path::Path;
use strata::{Model, SessionOptions, Tensor};
use strata_server::EMBEDDED_MODEL;

fn python() -> Option<String> {
    match std::env::var("STRATA_PYENV_PYTHON") {
        Ok(p) if Path::new(&p).exists() => Some(p),
        _ => {
            assert!(
                std::env::var("STRATA_REQUIRE_TESTDATA").as_deref() != Ok("1"),
                "STRATA_PYENV_PYTHON is not set to the project venv's python (run `cargo xtask test`)"
            );
            eprintln!("skipped: STRATA_PYENV_PYTHON not set (run `cargo xtask test`)");
            None
        }
    }
}

#[test]
fn tritonclient_http_talks_to_the_server() {
    let Some(python) = python() else { return };
    let repo = TempRepo::new("tritonclient");
    repo.add("digits", Some(1), EMBEDDED_MODEL).add(
        "identity",
        Some(1),
        &fixture("identity_all.onnx"),
    );
    let server = TestServer::start(repo.server_config());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/tritonclient_check.py");
    let output = std::process::Command::new(&python)
        .arg(&script)
        .arg(server.addr.to_string())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tritonclient script failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Json = serde_json::from_slice(&output.stdout).unwrap();

    assert_eq!(report["live"], true);
    assert_eq!(report["ready"], true);
    assert_eq!(report["model_ready"], true);
    assert_eq!(report["server"]["name"], "strata");
    assert_eq!(report["metadata"]["inputs"][0]["shape"], json!([-1, 64]));
    assert_eq!(report["config"]["max_batch_size"], 8);

    let session = Model::from_bytes(EMBEDDED_MODEL)
        .unwrap()
        .session(SessionOptions::default().with_threads(1))
        .unwrap();
    let pixels = Tensor::from_vec(digit_pixels(2), &[2, 64]).unwrap();
    let expected = session.run([("pixels", pixels)]).unwrap();
    let probabilities = expected
        .get("probabilities")
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let labels = expected.get("label").unwrap().to_vec::<i64>().unwrap();
    for encoding in ["json", "binary"] {
        let got = &report[encoding];
        let got_p: Vec<f32> = got["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got_p, probabilities, "{encoding}");
        assert_eq!(got["label"], json!(labels), "{encoding}");
    }
    assert_eq!(report["json"]["id"], "tc-False");
    assert_eq!(report["binary"]["id"], "tc-True");
    assert_eq!(report["bytes"], json!(["strata", "", "v2", "é"]));
    assert_eq!(report["int8"], json!([1, 0, 0, 1]));
    assert_eq!(report["uint64"], json!([1, 0, 0, 1]));
    assert_eq!(report["fp16"], json!([1.0, 0.0, 0.0, 1.0]));
    assert_eq!(report["bool"], json!([true, false, false, true]));
    assert_eq!(report["bf16"], json!([1.0, 2.0, 3.0, 4.0]));
    let error = report["unknown_model_error"].as_str().unwrap();
    assert!(error.contains("unknown model 'nope'"), "{error}");
}
