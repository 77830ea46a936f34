//! The server end to end: every endpoint, every datatype, JSON and binary encodings,
//! batching (visible in the metrics), load/unload under traffic, every error class, and
//! graceful shutdown. Each test starts its own server on an ephemeral port.

mod common;

use common::{digit_pixels, fixture, TempRepo, TestServer};
use serde_json::{json, Value as Json};
use std::sync::Arc;
use strata::{Model, SessionOptions, Tensor};
use strata_server::{ServerConfig, EMBEDDED_MODEL};

/// The facade's outputs for `rows` digits, as (probabilities, labels).
fn reference_digits(rows: usize) -> (Vec<f32>, Vec<i64>) {
    let model = Model::from_bytes(EMBEDDED_MODEL).unwrap();
    let session = model
        .session(SessionOptions::default().with_threads(1))
        .unwrap();
    let pixels = Tensor::from_vec(digit_pixels(rows), &[rows, 64]).unwrap();
    let out = session.run([("pixels", pixels)]).unwrap();
    (
        out.get("probabilities").unwrap().to_vec::<f32>().unwrap(),
        out.get("label").unwrap().to_vec::<i64>().unwrap(),
    )
}

fn digits_request(rows: usize) -> Json {
    json!({
        "id": "req-7",
        "inputs": [{"name": "pixels", "shape": [rows, 64], "datatype": "FP32", "data": digit_pixels(rows)}]
    })
}

fn as_f32(v: &Json) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn health_and_server_metadata() {
    let server = TestServer::start(ServerConfig::default());
    assert_eq!(server.get("/v2/health/live").status, 200);
    assert_eq!(server.get("/v2/health/ready").status, 200);
    let meta = server.get("/v2").json();
    assert_eq!(meta["name"], "strata");
    assert!(meta["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("binary_tensor_data")));
    let missing = server.get("/v2/nothing");
    assert_eq!(missing.status, 404);
    assert!(missing.error().contains("/v2/nothing"));
    assert_eq!(server.post_json("/v2/health/live", &json!({})).status, 404);
    assert_eq!(
        server.post_json("/v2/models/digits", &json!({})).status,
        405
    );
}

#[test]
fn embedded_model_metadata_and_json_inference() {
    let server = TestServer::start(ServerConfig::default());
    let meta = server.get("/v2/models/digits").json();
    assert_eq!(meta["name"], "digits");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "pixels", "datatype": "FP32", "shape": [-1, 64]})
    );
    assert_eq!(meta["outputs"][1]["datatype"], "INT64");
    assert_eq!(
        server.get("/v2/models/digits/versions/1").json()["name"],
        "digits"
    );
    assert_eq!(server.get("/v2/models/digits/ready").status, 200);
    assert_eq!(server.get("/v2/models/digits/versions/1/ready").status, 200);
    assert_eq!(
        server.get("/v2/models/digits/config").json()["max_batch_size"],
        8
    );

    let reply = server.post_json("/v2/models/digits/infer", &digits_request(3));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["id"], "req-7");
    assert_eq!(body["model_name"], "digits");
    assert_eq!(body["model_version"], "1");
    let (probabilities, labels) = reference_digits(3);
    let out = &body["outputs"];
    assert_eq!(out[0]["name"], "probabilities");
    assert_eq!(out[0]["shape"], json!([3, 10]));
    assert_eq!(as_f32(&out[0]["data"]), probabilities);
    assert_eq!(out[1]["data"], json!(labels));

    // A requested subset, on an explicit version, with nested data.
    let nested: Vec<Vec<f32>> = digit_pixels(2).chunks(64).map(<[f32]>::to_vec).collect();
    let request = json!({
        "inputs": [{"name": "pixels", "shape": [2, 64], "datatype": "FP32", "data": nested}],
        "outputs": [{"name": "label"}]
    });
    let body = server
        .post_json("/v2/models/digits/versions/1/infer", &request)
        .json();
    assert_eq!(body["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(body["outputs"][0]["name"], "label");
    assert!(body.get("id").is_none());
}

#[test]
fn binary_tensor_data_both_directions() {
    let server = TestServer::start(ServerConfig::default());
    let pixels = digit_pixels(2);
    let bytes: Vec<u8> = pixels.iter().flat_map(|x| x.to_le_bytes()).collect();
    let header = json!({
        "inputs": [{"name": "pixels", "shape": [2, 64], "datatype": "FP32",
                    "parameters": {"binary_data_size": bytes.len()}}],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": true}},
                    {"name": "label", "parameters": {"binary_data": false}}]
    });
    let reply = server.post_binary("/v2/models/digits/infer", &header, &bytes);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    let (probabilities, labels) = reference_digits(2);
    assert_eq!(body["outputs"][0]["parameters"]["binary_data_size"], 80);
    assert!(body["outputs"][0].get("data").is_none());
    let got: Vec<f32> = reply
        .binary()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(got, probabilities);
    assert_eq!(body["outputs"][1]["data"], json!(labels));

    // binary_data_output asks for every output in binary.
    let header = json!({
        "parameters": {"binary_data_output": true},
        "inputs": [{"name": "pixels", "shape": [2, 64], "datatype": "FP32",
                    "parameters": {"binary_data_size": bytes.len()}}]
    });
    let reply = server.post_binary("/v2/models/digits/infer", &header, &bytes);
    assert_eq!(reply.binary().len(), 80 + 16);
}

#[test]
fn every_datatype_round_trips_in_json_and_binary() {
    let repo = TempRepo::new("dtypes");
    repo.add("identity", Some(1), &fixture("identity_all.onnx"));
    let server = TestServer::start(repo.server_config());
    let cases: Vec<(&str, Json)> = vec![
        ("BOOL", json!([true, false, false, true])),
        ("UINT8", json!([0, 1, 254, 255])),
        ("UINT16", json!([0, 1, 65534, 65535])),
        ("UINT32", json!([0, 1, 7, 4294967295u64])),
        ("UINT64", json!([0, 1, 7, u64::MAX])),
        ("INT8", json!([-128, -1, 0, 127])),
        ("INT16", json!([-32768, -1, 0, 32767])),
        ("INT32", json!([-2147483648i64, -1, 0, 2147483647])),
        ("INT64", json!([i64::MIN, -1, 0, i64::MAX])),
        ("FP16", json!([0.5, -2.0, 0.0, 1024.0])),
        ("BF16", json!([0.5, -2.0, 0.0, 256.0])),
        ("FP32", json!([0.25, -1.5, 0.0, 3.0e8])),
        ("FP64", json!([0.1, -1.5e300, 0.0, 3.25])),
        ("BYTES", json!(["", "a", "héllo", "x y"])),
    ];
    let inputs: Vec<Json> = cases
        .iter()
        .map(|(dt, data)| json!({"name": format!("in_{dt}"), "shape": [2, 2], "datatype": dt, "data": data}))
        .collect();
    let reply = server.post_json("/v2/models/identity/infer", &json!({"inputs": inputs}));
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    for (dt, data) in &cases {
        let out = body["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == format!("out_{dt}"))
            .unwrap();
        assert_eq!(out["datatype"], *dt);
        assert_eq!(out["shape"], json!([2, 2]));
        assert_eq!(out["data"], *data, "{dt}");
    }

    // The same through binary data: inputs from JSON, every output binary; then feed the
    // binary outputs back as binary inputs and expect identical bytes.
    let request = json!({"parameters": {"binary_data_output": true}, "inputs": inputs});
    let first = server.post_json("/v2/models/identity/infer", &request);
    assert_eq!(first.status, 200, "{}", first.text());
    let header = first.json();
    let mut binary_inputs = Vec::new();
    for out in header["outputs"].as_array().unwrap() {
        let name = out["name"].as_str().unwrap().replacen("out_", "in_", 1);
        binary_inputs.push(json!({
            "name": name, "shape": out["shape"], "datatype": out["datatype"],
            "parameters": {"binary_data_size": out["parameters"]["binary_data_size"]}
        }));
    }
    let request = json!({"parameters": {"binary_data_output": true}, "inputs": binary_inputs});
    let second = server.post_binary("/v2/models/identity/infer", &request, first.binary());
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(second.binary(), first.binary());
}

#[test]
fn concurrent_requests_share_executions() {
    let repo = TempRepo::new("batching");
    repo.add("digits", None, EMBEDDED_MODEL).config(
        "digits",
        "config.toml",
        "max_batch_size = 16\n[dynamic_batching]\nmax_queue_delay_microseconds = 200000\npreferred_batch_size = [8]\n",
    );
    let server = Arc::new(TestServer::start(repo.server_config()));
    let (probabilities, _) = reference_digits(1);
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || {
                server.post_json("/v2/models/digits/infer", &digits_request(1))
            })
        })
        .collect();
    for client in clients {
        let reply = client.join().unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(as_f32(&reply.json()["outputs"][0]["data"]), probabilities);
    }
    let labels = "{model=\"digits\",version=\"1\"}";
    let executions = server.metric(&format!("strata_inference_exec_count_total{labels}"));
    let inferences = server.metric(&format!("strata_inference_count_total{labels}"));
    let successes = server.metric(&format!("strata_inference_request_success_total{labels}"));
    assert_eq!(inferences, 8.0);
    assert_eq!(successes, 8.0);
    assert!(executions < 8.0, "8 requests took {executions} executions");
    let text = server.get("/metrics").text();
    for name in [
        "strata_inference_request_duration_us_total",
        "strata_inference_queue_duration_us_total",
        "strata_inference_compute_infer_duration_us_total",
        "strata_inference_pending_request_count",
        "strata_process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
}

#[test]
fn bad_requests_get_4xx_and_the_server_goes_on() {
    let mut config = ServerConfig::default();
    config.limits.max_body_bytes = 64 * 1024;
    config.limits.max_tensor_elements = 10_000;
    let server = TestServer::start(config);
    let infer = "/v2/models/digits/infer";
    let expect = |reply: common::Reply, status: u16, needle: &str| {
        assert_eq!(reply.status, status, "{}", reply.text());
        let message = reply.error();
        assert!(
            message.contains(needle),
            "'{message}' should mention '{needle}'"
        );
    };
    let pixels = |shape: Json, datatype: &str, data: Json| json!({"inputs": [{"name": "pixels", "shape": shape, "datatype": datatype, "data": data}]});
    expect(
        server.post_json("/v2/models/nope/infer", &digits_request(1)),
        404,
        "unknown model 'nope'",
    );
    expect(
        server.post_json("/v2/models/digits/versions/9/infer", &digits_request(1)),
        404,
        "no version '9'",
    );
    expect(
        common::request(server.addr, "POST", infer, &[], b"{not json"),
        400,
        "malformed",
    );
    expect(
        server.post_json(infer, &json!({"inputs": []})),
        400,
        "missing input 'pixels'",
    );
    expect(
        server.post_json(
            infer,
            &json!({"inputs": [{"name": "pixel", "shape": [1], "datatype": "FP32", "data": [1]}]}),
        ),
        400,
        "no input 'pixel'",
    );
    expect(
        server.post_json(infer, &pixels(json!([1, 64]), "INT32", json!(vec![0; 64]))),
        400,
        "model expects FP32",
    );
    expect(
        server.post_json(infer, &pixels(json!([1, 63]), "FP32", json!(vec![0; 63]))),
        400,
        "shape [1, 63]",
    );
    expect(
        server.post_json(infer, &pixels(json!([1, 64]), "FP32", json!(vec![0; 60]))),
        400,
        "needs 64 elements",
    );
    expect(
        server.post_json(infer, &pixels(json!([1, 64]), "FP8", json!([]))),
        400,
        "unknown datatype 'FP8'",
    );
    expect(
        server.post_json(infer, &pixels(json!([-1, 64]), "FP32", json!([]))),
        400,
        "negative dimension",
    );
    expect(
        server.post_json(infer, &pixels(json!([1000, 64]), "FP32", json!([]))),
        400,
        "more than 10000 elements",
    );
    expect(
        server.post_json(infer, &pixels(json!([9, 64]), "FP32", json!(vec![0; 576]))),
        400,
        "max_batch_size 8",
    );
    expect(
        server.post_json(infer, &pixels(json!([1, 64]), "FP32", json!(vec!["a"; 64]))),
        400,
        "element 0 (\"a\") is not a valid FP32",
    );
    let mut request = digits_request(1);
    request["outputs"] = json!([{"name": "logits"}]);
    expect(server.post_json(infer, &request), 400, "no output 'logits'");
    request["outputs"] = json!([]);
    request["parameters"] = json!({"priority": 5});
    expect(server.post_json(infer, &request), 400, "priority 5");
    let header = json!({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32",
                                    "parameters": {"binary_data_size": 256}}]});
    expect(
        server.post_binary(infer, &header, &[0; 100]),
        400,
        "binary_data_size 256",
    );
    expect(
        server.post_binary(infer, &header, &[0; 300]),
        400,
        "44 bytes of binary data",
    );
    let reply = common::request(
        server.addr,
        "POST",
        infer,
        &[("Inference-Header-Content-Length", "99999".into())],
        b"{}",
    );
    expect(reply, 400, "Inference-Header-Content-Length");
    expect(
        common::request(server.addr, "POST", infer, &[], &vec![b' '; 100_000]),
        413,
        "limit of 65536 bytes",
    );
    // Still serving.
    assert_eq!(server.post_json(infer, &digits_request(1)).status, 200);
    let failures =
        server.metric("strata_inference_request_failure_total{model=\"digits\",version=\"1\"}");
    assert!(failures >= 10.0, "{failures}");
}

#[test]
fn a_bad_model_is_reported_and_the_others_serve() {
    let repo = TempRepo::new("bad");
    repo.add("digits", Some(1), EMBEDDED_MODEL)
        .add("digits", Some(2), EMBEDDED_MODEL)
        .add("broken", Some(1), b"this is not onnx");
    std::fs::create_dir_all(repo.root.join("empty")).unwrap();
    let server = TestServer::start(repo.server_config());
    let index = server.post_json("/v2/repository/index", &json!({})).json();
    let rows = index.as_array().unwrap();
    let state = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap().clone();
    assert_eq!(state("broken")["state"], "UNAVAILABLE");
    assert!(state("broken")["reason"]
        .as_str()
        .unwrap()
        .contains("version 1"));
    assert_eq!(state("empty")["state"], "UNAVAILABLE");
    assert_eq!(rows.iter().filter(|r| r["name"] == "digits").count(), 2);

    let meta = server.get("/v2/models/broken").json();
    assert_eq!(meta["state"], "UNAVAILABLE");
    assert!(!meta["reason"].as_str().unwrap().is_empty());
    let reply = server.get("/v2/models/broken/ready");
    assert_eq!(reply.status, 503);
    let reply = server.post_json("/v2/models/broken/infer", &digits_request(1));
    assert_eq!(reply.status, 503);
    assert!(reply.error().contains("model 'broken' is not ready"));

    // Two versions: the newest serves by default, both by number.
    assert_eq!(
        server.get("/v2/models/digits").json()["versions"],
        json!(["1", "2"])
    );
    let body = server
        .post_json("/v2/models/digits/infer", &digits_request(1))
        .json();
    assert_eq!(body["model_version"], "2");
    let body = server
        .post_json("/v2/models/digits/versions/1/infer", &digits_request(1))
        .json();
    assert_eq!(body["model_version"], "1");
}

#[test]
fn load_and_unload_swap_models_without_failing_requests_in_flight() {
    let repo = TempRepo::new("swap");
    repo.add("digits", None, EMBEDDED_MODEL);
    let server = Arc::new(TestServer::start(repo.server_config()));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || {
                (0..15)
                    .map(|_| {
                        server
                            .post_json("/v2/models/digits/infer", &digits_request(1))
                            .status
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for _ in 0..3 {
        let reply = server.post_json("/v2/repository/models/digits/load", &json!({}));
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    for client in clients {
        assert!(client.join().unwrap().iter().all(|&s| s == 200));
    }

    let infer = |model: &str| {
        server
            .post_json(&format!("/v2/models/{model}/infer"), &digits_request(1))
            .status
    };
    let repository = |model: &str, action: &str| {
        server
            .post_json(
                &format!("/v2/repository/models/{model}/{action}"),
                &json!({}),
            )
            .status
    };
    assert_eq!(repository("digits", "unload"), 200);
    assert_eq!(infer("digits"), 503);
    assert_eq!(server.get("/v2/models/digits/ready").status, 503);
    assert_eq!(repository("digits", "load"), 200);
    assert_eq!(infer("digits"), 200);

    // A model added to the folder after start can be loaded by name.
    repo.add("later", Some(3), EMBEDDED_MODEL);
    assert_eq!(infer("later"), 404);
    assert_eq!(repository("later", "load"), 200);
    let body = server
        .post_json("/v2/models/later/infer", &digits_request(1))
        .json();
    assert_eq!(body["model_version"], "3");
    assert_eq!(repository("ghost", "load"), 404);
    assert_eq!(repository("..%2F", "load"), 404);
}

#[test]
fn full_queue_answers_429_and_queue_timeouts_503() {
    let repo = TempRepo::new("queue");
    repo.add("slow", None, &fixture("slow.onnx")).config(
        "slow",
        "config.json",
        r#"{"max_batch_size": 0, "dynamic_batching": {"max_queue_size": 1}}"#,
    );
    let server = Arc::new(TestServer::start(repo.server_config()));
    let request =
        json!({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0.01]}]});
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (server, request) = (server.clone(), request.clone());
            std::thread::spawn(move || server.post_json("/v2/models/slow/infer", &request))
        })
        .collect();
    let replies: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(statuses.contains(&200), "{statuses:?}");
    let full = replies.iter().find(|r| r.status == 429).expect("a 429");
    assert!(full.error().contains("queue is full"), "{}", full.error());

    // A request-level queue timeout of 1 µs expires while another request executes.
    let timed = json!({"parameters": {"timeout": 1},
                       "inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [0.01]}]});
    let busy = {
        let (server, request) = (server.clone(), request.clone());
        std::thread::spawn(move || server.post_json("/v2/models/slow/infer", &request))
    };
    std::thread::sleep(std::time::Duration::from_millis(5));
    let reply = server.post_json("/v2/models/slow/infer", &timed);
    assert_eq!(busy.join().unwrap().status, 200);
    if reply.status != 200 {
        assert_eq!(reply.status, 503, "{}", reply.text());
        assert!(reply.error().contains("timeout"), "{}", reply.error());
    }
}

#[test]
fn shutdown_finishes_queued_requests() {
    // Requests wait up to 5 s for company; shutdown flushes them at once.
    let repo = TempRepo::new("shutdown");
    repo.add("digits", None, EMBEDDED_MODEL).config(
        "digits",
        "config.toml",
        "max_batch_size = 64\n[dynamic_batching]\nmax_queue_delay_microseconds = 5000000\n",
    );
    let mut server = TestServer::start(repo.server_config());
    let addr = server.addr;
    let clients: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let body = digits_request(1).to_string();
                common::request(
                    addr,
                    "POST",
                    "/v2/models/digits/infer",
                    &[],
                    body.as_bytes(),
                )
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let started = std::time::Instant::now();
    server.stop();
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    for client in clients {
        assert_eq!(client.join().unwrap().status, 200);
    }
}

#[test]
fn the_binary_serves_the_embedded_model_and_exits_0_on_sigterm() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_strata-server"))
        .args(["--port", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    let addr: std::net::SocketAddr = first
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let printed: Vec<String> = lines.by_ref().take(3).map(Result::unwrap).collect();
    assert!(
        printed
            .iter()
            .any(|l| l.contains("model digits version 1 READY")),
        "{printed:?}"
    );
    assert!(
        printed.iter().any(|l| l.starts_with("curl -s -X POST")),
        "{printed:?}"
    );
    let body = digits_request(1).to_string();
    let reply = common::request(
        addr,
        "POST",
        "/v2/models/digits/infer",
        &[],
        body.as_bytes(),
    );
    assert_eq!(reply.status, 200);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(child.wait().unwrap().success());
}
