//! Whole-model latency of a few test models on one thread, through the public API
//! (`Model::load`, `Session::run`). Models missing from the test data are skipped with a
//! message (run `cargo xtask testdata` to create them).

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;
use strata::{Model, SessionOptions};
use strata_benches::testdata::{self, TestCase};

/// The benchmarked models: a small CNN, a mobile CNN and a transformer encoder.
const MODELS: &[&str] = &["light_squeezenet", "mobilenetv2", "bert_encoder"];

fn models(c: &mut Criterion) {
    let root = testdata::default_dir();
    let mut group = c.benchmark_group("model");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for &name in MODELS {
        let case = match TestCase::load(&root, name) {
            Ok(case) => case,
            Err(e) => {
                eprintln!("skipping model/{name}: {e:#}");
                continue;
            }
        };
        let model = Model::load(&case.model_path).expect("loading the model");
        let session = model
            .session(SessionOptions::default().with_threads(1))
            .expect("creating a session");
        let inputs: Vec<_> = model
            .inputs()
            .into_iter()
            .map(|i| i.name)
            .zip(case.inputs.iter().cloned())
            .collect();
        group.bench_function(name, |b| {
            b.iter(|| black_box(session.run(inputs.clone()).expect("running the model")))
        });
    }
    group.finish();
}

criterion_group!(benches, models);
criterion_main!(benches);
