//! Steady-state runs allocate no data-sized memory: once warmed up, a session's run
//! makes no heap allocation of 4 KiB or more except the outputs it hands to the caller
//! (activations come from the session's buffer pool, kernel scratch from per-thread
//! buffers, per-shape plans from the operators' caches), and its small bookkeeping
//! allocations stay a few per node.
//!
//! The counting allocator is process-wide (kernels allocate on pool threads too), so this
//! file holds a single test.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use strata::{DType, Model, SessionOptions, Tensor};

/// Allocations of at least this many bytes are "data-sized".
const LARGE: usize = 4096;

/// Bound on small allocations per node and run: today about 3 (the output tensor's shared
/// storage, the node's input and output lists) plus a few shape vectors in some kernels.
const SMALL_PER_NODE: usize = 8;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static SMALL: AtomicUsize = AtomicUsize::new(0);
static LARGE_COUNT: AtomicUsize = AtomicUsize::new(0);
static LARGE_BYTES: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if COUNTING.load(Relaxed) {
        if size >= LARGE {
            LARGE_COUNT.fetch_add(1, Relaxed);
            LARGE_BYTES.fetch_add(size, Relaxed);
        } else {
            SMALL.fetch_add(1, Relaxed);
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// bookkeeping only touches atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded verbatim; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every path above forwards).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs before counting.
const WARM_UP: usize = 2;

/// Windows of counted runs tried before giving up. Per-thread scratch buffers grow to the
/// largest task a thread has run, and which thread takes which task varies from run to run,
/// so a thread may meet its largest task only after many runs. Steady state is reached when
/// a whole window makes no data-sized allocation but the outputs; a per-run allocation never
/// gives such a window.
const WINDOWS: usize = 10;

#[derive(Debug)]
struct Measured {
    small: usize,
    large: usize,
    large_bytes: usize,
}

fn measure(model: &Model, threads: usize, runs: usize) -> (Measured, usize, usize) {
    let session = model
        .session(SessionOptions::default().with_threads(threads))
        .expect("session");
    let inputs: Vec<(String, Tensor)> = model
        .inputs()
        .into_iter()
        .map(|info| {
            let shape = common::declared_dims(&info);
            let n = shape.iter().product();
            let tensor = match info.dtype {
                Some(DType::I64) => Tensor::from_vec(vec![1i64; n], &shape),
                _ => Tensor::from_vec(vec![0.5f32; n], &shape),
            }
            .expect("input");
            (info.name, tensor)
        })
        .collect();
    measure_session(&session, &inputs, runs)
}

/// Allocations per `runs` runs of `session` on `inputs` once steady, with the session's
/// output count and node count.
fn measure_session(
    session: &strata::Session,
    inputs: &[(String, Tensor)],
    runs: usize,
) -> (Measured, usize, usize) {
    for _ in 0..WARM_UP {
        session.run(inputs.to_vec()).expect("warm-up run");
    }
    let outputs = session.output_names().len();
    let mut measured = count_runs(session, inputs, runs);
    for _ in 1..WINDOWS {
        if measured.large <= outputs * runs {
            break;
        }
        measured = count_runs(session, inputs, runs);
    }
    (measured, outputs, session.graph().nodes.len())
}

/// Allocations made by `runs` runs of `session` on `inputs` (cloned beforehand).
fn count_runs(session: &strata::Session, inputs: &[(String, Tensor)], runs: usize) -> Measured {
    let feeds: Vec<_> = (0..runs).map(|_| inputs.to_vec()).collect();
    for counter in [&SMALL, &LARGE_COUNT, &LARGE_BYTES] {
        counter.store(0, Relaxed);
    }
    COUNTING.store(true, Relaxed);
    for feed in feeds {
        drop(session.run(feed).expect("run"));
    }
    COUNTING.store(false, Relaxed);
    Measured {
        small: SMALL.load(Relaxed),
        large: LARGE_COUNT.load(Relaxed),
        large_bytes: LARGE_BYTES.load(Relaxed),
    }
}

/// Checks one measurement against the bounds of the module docs, for runs of `nodes` node
/// evaluations each; failures are pushed.
fn check(label: &str, m: &Measured, outputs: usize, nodes: usize, failures: &mut Vec<String>) {
    const RUNS: usize = RUNS_PER_WINDOW;
    eprintln!(
        "{label}, per run: {} small allocations ({nodes} node evaluations), {} of >= {LARGE} bytes \
         ({} bytes; {outputs} output(s))",
        m.small / RUNS,
        m.large / RUNS,
        m.large_bytes / RUNS,
    );
    // An output's buffer leaves the pool with the caller, so each run allocates one per
    // output (its size class may be large even for a small output).
    if m.large > outputs * RUNS {
        failures.push(format!(
            "{label}: {} allocations of >= {LARGE} bytes in {RUNS} runs, at most {} expected \
             (the outputs)",
            m.large,
            outputs * RUNS
        ));
    }
    if m.small > RUNS * SMALL_PER_NODE * nodes {
        failures.push(format!(
            "{label}: {} small allocations in {RUNS} runs of {nodes} node evaluations",
            m.small
        ));
    }
}

/// Runs counted per window.
const RUNS_PER_WINDOW: usize = 3;

#[test]
fn steady_state_runs_allocate_only_outputs_and_bookkeeping() {
    let mut failures = Vec::new();
    // A batch of 64 run in two stages of sub-batches (the digits example at 300 bytes per
    // sub-batch: the hidden layer one item at a time, the classes 7 at a time): the
    // stage's joined output and each sub-batch's pieces come from the pool too.
    let digits = Model::load(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/models/digits.onnx"),
    )
    .expect("examples/models/digits.onnx");
    let pixels: Vec<f32> = (0..64 * 64).map(|i| (i % 17) as f32).collect();
    let inputs = [(
        "pixels".to_string(),
        Tensor::from_vec(pixels, &[64, 64]).expect("pixels"),
    )];
    for threads in [1, 2] {
        let session = digits
            .session(
                SessionOptions::default()
                    .with_threads(threads)
                    .with_sub_batch_bytes(300),
            )
            .expect("session");
        assert_eq!(session.sub_batch_items(), Some(1));
        let (m, outputs, nodes) = measure_session(&session, &inputs, RUNS_PER_WINDOW);
        assert_eq!(nodes, 4, "MatMul+Add+Relu, MatMul+Add, Softmax, ArgMax");
        // The hidden layer 64 times, the other three nodes 10 times (7 items at a time).
        let evaluations = 64 + 3 * 10;
        let label = format!("digits, batch 64 in stages, {threads} thread(s)");
        check(&label, &m, outputs, evaluations, &mut failures);
    }
    let Some(dir) = common::testdata_dir() else {
        eprintln!("skipped the test models: no test data (cargo xtask testdata)");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        return;
    };
    // Between them: convs (grouped, depthwise, pointwise, strided), max and average pools,
    // batch norm, LRN, concat, gemm, and a transformer's matmuls, layer norms, softmax and
    // gathers.
    let models = [
        "light_squeezenet",
        "mobilenetv2",
        "bert_encoder",
        "light_inception_v1",
        "light_inception_v2",
        "light_densenet121",
        "light_shufflenet",
    ];
    for name in models {
        let path = dir.join("models").join(name).join("model.onnx");
        if !path.is_file() {
            failures.push(format!("{name}: missing {}", path.display()));
            continue;
        }
        let model = Model::load(&path).expect("load");
        for threads in [1, 2] {
            let (m, outputs, nodes) = measure(&model, threads, RUNS_PER_WINDOW);
            let label = format!("{name}, {threads} thread(s)");
            check(&label, &m, outputs, nodes, &mut failures);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
