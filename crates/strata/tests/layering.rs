//! Tidy check: every crate depends only on crates above it in the layer table of
//! docs/architecture.md (memory, tensor, ops, graph, onnx, sched, gpu, sandbox, strata,
//! server, cli). A new edge pointing the wrong way fails here.

use std::path::Path;

const LAYERS: [(&str, &str); 11] = [
    ("strata-memory", "memory"),
    ("strata-tensor", "tensor"),
    ("strata-ops", "operators"),
    ("strata-graph", "graph"),
    ("strata-onnx", "strata-onnx"),
    ("strata-sched", "scheduler"),
    ("strata-gpu", "gpu"),
    ("strata-sandbox", "sandbox"),
    ("strata", "strata"),
    ("strata-server", "api"),
    ("strata-cli", "strata-cli"),
];

/// The strata crates named in the `[dependencies]` section of a manifest.
fn strata_dependencies(manifest: &str) -> Vec<String> {
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps {
            if let Some(name) = line.split(['=', '.', ' ']).next() {
                if name.starts_with("strata") {
                    deps.push(name.to_string());
                }
            }
        }
    }
    deps
}

#[test]
fn dependencies_point_up_the_layer_table() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for (index, (name, folder)) in LAYERS.iter().enumerate() {
        let Ok(manifest) = std::fs::read_to_string(crates.join(folder).join("Cargo.toml")) else {
            continue; // crate not created yet
        };
        checked += 1;
        for dep in strata_dependencies(&manifest) {
            let dep_index = LAYERS
                .iter()
                .position(|(n, _)| *n == dep)
                .unwrap_or_else(|| {
                    panic!("{name} depends on {dep}, which is not in the layer table")
                });
            assert!(
                dep_index < index,
                "{name} must not depend on {dep}: it sits below it in the layer table"
            );
        }
    }
    assert!(checked >= 8, "found only {checked} crates");
}

#[test]
fn parser_reads_dependency_names() {
    let manifest = "[package]\nname = \"x\"\n[dependencies]\nstrata-ops.workspace = true\nserde = \"1\"\nstrata-tensor = { path = \"../tensor\" }\n[dev-dependencies]\nstrata = { path = \"..\" }\n";
    assert_eq!(
        strata_dependencies(manifest),
        vec!["strata-ops", "strata-tensor"]
    );
}
