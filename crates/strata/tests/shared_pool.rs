//! Sessions given clones of one `ThreadPool` share its workers: creating them starts no
//! threads, and runs from several threads at once all complete with the outputs of a session
//! of its own (a run that finds the pool busy runs its kernels on its own thread).
//!
//! One test: it counts the process's threads, which other tests running at once would move.

use std::path::Path;
use strata::{Model, SessionOptions, Tensor, ThreadPool};

fn pixels(items: usize, seed: usize) -> Tensor {
    let data: Vec<f32> = (0..items * 64)
        .map(|i| ((i * 7919 + seed * 13) % 1601) as f32 / 100.0)
        .collect();
    Tensor::from_vec(data, &[items, 64]).expect("pixels")
}

#[cfg(target_os = "linux")]
fn thread_count() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/task").ok()?.count())
}

#[cfg(not(target_os = "linux"))]
fn thread_count() -> Option<usize> {
    None
}

#[test]
fn sessions_on_one_pool_start_no_threads_and_run_at_once() {
    let model = Model::load(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/models/digits.onnx"),
    )
    .expect("examples/models/digits.onnx");
    let own = model
        .session(SessionOptions::default().with_threads(1))
        .expect("session");
    let expected: Vec<Vec<f32>> = (0..3)
        .map(|seed| {
            let out = own.run([("pixels", pixels(16, seed))]).expect("run");
            out.get("probabilities")
                .expect("probabilities")
                .to_vec::<f32>()
                .expect("f32")
        })
        .collect();

    let pool = ThreadPool::new(2);
    let before = thread_count();
    let sessions: Vec<_> = (0..3)
        .map(|_| {
            model
                .session(SessionOptions::default().with_thread_pool(pool.clone()))
                .expect("session")
        })
        .collect();
    assert_eq!(
        thread_count(),
        before,
        "sessions on a shared pool start no threads"
    );
    assert!(sessions.iter().all(|s| s.threads() == pool.threads()));

    std::thread::scope(|scope| {
        for (seed, session) in sessions.iter().enumerate() {
            let expected = &expected[seed];
            scope.spawn(move || {
                for _ in 0..50 {
                    let out = session.run([("pixels", pixels(16, seed))]).expect("run");
                    let got = out.get("probabilities").expect("probabilities");
                    let got = got.to_vec::<f32>().expect("f32");
                    for (a, b) in got.iter().zip(expected) {
                        assert!((a - b).abs() <= 1e-6 + 1e-5 * b.abs(), "{a} vs {b}");
                    }
                }
            });
        }
    });
}
