//! Measuring: each engine loads a model and has its first run checked against the reference;
//! then the engines run interleaved round by round (Strata, tract, onnxruntime, Strata, ...)
//! so that all see the same machine state. Also the batch-scaling rows and the GEMM line.

use crate::options::{model_dir, Options};
use anyhow::{anyhow, Result};
use serde_json::{json, Value as Json};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use strata_benches::accuracy::Check;
use strata_benches::engines::{check_outputs, repeat_batch, StrataRunner, TractRunner};
use strata_benches::ort::OrtWorker;
use strata_benches::stats::{median, min, percentile};
use strata_benches::testdata::TestCase;

/// What one engine did on one model.
#[derive(Debug, Default)]
pub struct EngineResult {
    /// Timed runs, milliseconds.
    pub samples_ms: Vec<f64>,
    /// The first run's outputs against the reference.
    pub check: Option<Check>,
    /// Why the engine could not load or run the model.
    pub error: Option<String>,
}

impl EngineResult {
    fn failed(error: impl std::fmt::Display) -> Self {
        EngineResult {
            error: Some(error.to_string()),
            ..Default::default()
        }
    }

    pub fn median_ms(&self) -> Option<f64> {
        (!self.samples_ms.is_empty()).then(|| median(&self.samples_ms))
    }

    pub fn to_json(&self) -> Json {
        let some = !self.samples_ms.is_empty();
        json!({
            "median_ms": self.median_ms(),
            "min_ms": some.then(|| min(&self.samples_ms)),
            "p90_ms": some.then(|| percentile(&self.samples_ms, 0.9)),
            "samples_ms": self.samples_ms,
            "max_abs_diff": self.check.as_ref().map(|c| c.max_abs_diff),
            "mismatches": self.check.as_ref().map(|c| c.mismatches),
            "passed": self.check.as_ref().map(Check::passed),
            "error": self.error,
        })
    }
}

/// One model at one thread count.
#[derive(Debug)]
pub struct Row {
    pub model: String,
    pub threads: usize,
    pub flops: Option<u64>,
    pub rounds: usize,
    pub strata: EngineResult,
    /// `None` when onnxruntime is not part of the run.
    pub ort: Option<EngineResult>,
    /// `None` when tract does not run at this thread count.
    pub tract: Option<EngineResult>,
}

/// `a / b` of two medians.
pub fn ratio(a: &EngineResult, b: Option<&EngineResult>) -> Option<f64> {
    Some(a.median_ms()? / b?.median_ms()?)
}

impl Row {
    pub fn strata_over_ort(&self) -> Option<f64> {
        ratio(&self.strata, self.ort.as_ref())
    }

    pub fn tract_over_strata(&self) -> Option<f64> {
        ratio(self.tract.as_ref()?, Some(&self.strata))
    }

    pub fn gflops_per_s(&self) -> Option<f64> {
        let flops = self.flops.filter(|&f| f > 0)? as f64;
        Some(flops / (self.strata.median_ms()? * 1e-3) / 1e9)
    }
}

/// One model at one batch size, one thread.
#[derive(Debug)]
pub struct BatchRow {
    pub model: String,
    pub batch: usize,
    pub strata: EngineResult,
    pub ort: Option<EngineResult>,
}

/// The GEMM line: Strata's `gemm_f32` against numpy's (OpenBLAS) sgemm, one thread each.
#[derive(Debug)]
pub struct Gemm {
    pub n: usize,
    pub strata: EngineResult,
    pub openblas: Option<EngineResult>,
}

impl Gemm {
    pub fn gflops_per_s(&self, r: &EngineResult) -> Option<f64> {
        let flops = 2.0 * (self.n as f64).powi(3);
        Some(flops / (r.median_ms()? * 1e-3) / 1e9)
    }
}

/// Runs `f`, turning a panic into an error.
pub fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(anyhow!("{what} panicked: {message}"))
        }
    }
}

/// Error chain of an anyhow error on one line.
pub fn chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// An engine ready to be timed: its result so far and its timed run.
struct Slot<'a> {
    result: &'a mut EngineResult,
    run: Box<dyn FnMut() -> Result<f64> + 'a>,
}

/// Runs of one engine in a row within a round: the first rewarms its caches after the other
/// engines ran (untimed), the rest are timed. Steady-state latency, as a server running one
/// model sees it, rather than the latency of a run that follows a different program.
pub const BURST: usize = 3;

/// Idle time before each engine's burst when several engines take turns: long enough for the
/// previous engine's idle workers to stop spinning (onnxruntime's keep a core busy for about
/// 25 ms after a run), so no engine is timed while another one's threads take a core.
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// `warmup` untimed then `rounds` timed rounds, each running every live slot [`BURST`] times
/// in turn (the first untimed, each burst after [`SETTLE`]), starting one slot later each
/// round so that no engine always follows the same one. A slot that fails records its error
/// and drops out.
fn time_rounds(slots: &mut [Slot<'_>], warmup: usize, rounds: usize) {
    let n = slots.len();
    let mut live = vec![true; n];
    for round in 0..warmup + rounds {
        for i in (0..n).map(|k| (round + k) % n) {
            let (slot, live) = (&mut slots[i], &mut live[i]);
            if n > 1 && *live {
                std::thread::sleep(SETTLE);
            }
            for run in 0..BURST {
                if !*live {
                    break;
                }
                match guarded("run", &mut slot.run) {
                    Ok(ms) if round >= warmup && run > 0 => slot.result.samples_ms.push(ms),
                    Ok(_) => {}
                    Err(e) => {
                        slot.result.error = Some(chain(&e));
                        *live = false;
                    }
                }
            }
        }
    }
}

/// Rounds to time: `options.rounds`, fewer (at least 3) when rounds costing `round_ms`
/// would exceed the budget.
fn rounds_for(options: &Options, round_ms: f64) -> usize {
    rounds_within(options, options.rounds, round_ms)
}

/// `wanted` rounds, fewer (at least 3) when rounds costing `round_ms` would exceed the
/// budget.
fn rounds_within(options: &Options, wanted: usize, round_ms: f64) -> usize {
    let fit = (options.budget_s * 1e3 / round_ms.max(1e-3)).floor() as usize;
    wanted.min(fit.max(3))
}

/// How many times `options.rounds` the batch-scaling section times, budget permitting: its
/// result is the ratio of two times that differ by a few percent at most, so it needs
/// tighter medians than a comparison between engines.
pub const BATCH_ROUNDS_FACTOR: usize = 3;

/// Builds an in-process engine and checks its first run; `Ok((runner, first_ms))`.
fn setup<R>(
    result: &mut EngineResult,
    name: &str,
    expected: &[strata::Tensor],
    build: impl FnOnce() -> Result<R>,
    outputs: impl Fn(&R) -> Result<strata_benches::engines::Outputs>,
) -> Option<(R, f64)> {
    let built = guarded(name, || {
        let runner = build()?;
        let start = std::time::Instant::now();
        let out = outputs(&runner)?;
        let first_ms = start.elapsed().as_secs_f64() * 1e3;
        Ok((runner, check_outputs(&out, expected)?, first_ms))
    });
    match built {
        Ok((runner, check, first_ms)) => {
            result.check = Some(check);
            Some((runner, first_ms))
        }
        Err(e) => {
            *result = EngineResult::failed(chain(&e));
            None
        }
    }
}

/// Loads onnxruntime on the model and checks its first run; `Some(first_ms)` when it worked.
fn setup_ort(
    worker: &mut OrtWorker,
    result: &mut EngineResult,
    model: &Path,
    threads: usize,
    batch: usize,
    case: &TestCase,
) -> Option<f64> {
    match worker.load(
        model,
        threads,
        batch,
        &case.input_paths(),
        &case.output_paths(),
    ) {
        Ok(load) => {
            result.check = Some(load.check);
            Some(load.first_ms)
        }
        Err(e) => {
            *result = EngineResult::failed(chain(&e));
            None
        }
    }
}

/// Loads, checks and times the engines on one model at one thread count.
pub fn measure(
    options: &Options,
    case: &TestCase,
    threads: usize,
    mut worker: Option<&mut OrtWorker>,
) -> Row {
    let mut row = Row {
        model: case.name.clone(),
        threads,
        flops: None,
        rounds: 0,
        strata: EngineResult::default(),
        ort: worker.as_ref().map(|_| EngineResult::default()),
        tract: (threads == 1).then(EngineResult::default),
    };
    eprintln!("[{} x{threads}] loading and checking", case.name);
    let path = &case.model_path;
    let mut round_ms = 0.0;
    let strata = setup(
        &mut row.strata,
        "Strata",
        &case.outputs,
        || StrataRunner::new(path, &case.inputs, threads),
        StrataRunner::outputs,
    );
    if let Some((_, ms)) = &strata {
        row.flops = StrataRunner::flops(path, &case.inputs).ok();
        round_ms += ms;
    }
    let tract = row.tract.as_mut().and_then(|result| {
        let r = setup(
            result,
            "tract",
            &case.outputs,
            || TractRunner::new(path, &case.inputs),
            TractRunner::outputs,
        );
        r.map(|(runner, ms)| {
            round_ms += ms;
            runner
        })
    });
    let ort_ok = match (worker.as_deref_mut(), row.ort.as_mut()) {
        (Some(w), Some(result)) => setup_ort(w, result, path, threads, 1, case)
            .map(|ms| round_ms += ms)
            .is_some(),
        _ => false,
    };
    row.rounds = rounds_for(options, round_ms * BURST as f64);
    eprintln!(
        "[{} x{threads}] {} warm-up + {} timed rounds",
        case.name, options.warmup, row.rounds
    );
    let mut slots = Vec::new();
    if let Some((runner, _)) = &strata {
        slots.push(Slot {
            result: &mut row.strata,
            run: Box::new(|| runner.run_timed()),
        });
    }
    if let (Some(runner), Some(result)) = (&tract, row.tract.as_mut()) {
        slots.push(Slot {
            result,
            run: Box::new(|| runner.run_timed()),
        });
    }
    if let (true, Some(w), Some(result)) = (ort_ok, worker, row.ort.as_mut()) {
        slots.push(Slot {
            result,
            run: Box::new(move || w.run()),
        });
    }
    time_rounds(&mut slots, options.warmup, row.rounds);
    drop(slots);
    row
}

/// Loads a model's test case, or the error as a row-shaped failure message.
pub fn load_case(options: &Options, model: &str) -> Result<TestCase, String> {
    TestCase::load_dir(&model_dir(options, model)).map_err(|e| chain(&e))
}

/// Batch-scaling rows of one model: batch 1 and `options.batch` on `free` (a copy of the
/// model with a free batch dim), one thread, inputs and references repeated along axis 0.
/// Both batch sizes run in the same rounds (each engine's batch-1 and batch-N runs take
/// turns with the others'), so that their ratio does not depend on the host's drift between
/// two separate timings. onnxruntime runs each batch size in its own worker (`workers`,
/// one per batch size; fewer leave it out).
///
/// Each sample of batch 1 is the time of `options.batch` runs in a row divided by their
/// number (what processing that many images one at a time takes per image), so that a
/// sample covers as many images at either batch size: the median of single runs would
/// favour batch 1 by the skew of the run-time distribution (SqueezeNet, 1 thread: the mean
/// run took 1.7% longer than the median), which a batch run, a sum of item runs, does not
/// show.
pub fn measure_batches(
    options: &Options,
    case: &TestCase,
    free: &Path,
    workers: Vec<&mut OrtWorker>,
) -> Vec<BatchRow> {
    let batches = [1, options.batch];
    let with_ort = workers.len() >= batches.len();
    let mut rows: Vec<BatchRow> = batches
        .iter()
        .map(|&batch| BatchRow {
            model: case.name.clone(),
            batch,
            strata: EngineResult::default(),
            ort: with_ort.then(EngineResult::default),
        })
        .collect();
    let mut workers: Vec<Option<&mut OrtWorker>> = workers.into_iter().map(Some).collect();
    workers.resize_with(batches.len(), || None);
    let mut round_ms = 0.0;
    let mut runners = Vec::new();
    let mut ort_ok = Vec::new();
    for (row, worker) in rows.iter_mut().zip(workers.iter_mut()) {
        let batch = row.batch;
        eprintln!("[{} batch {batch}] loading and checking", case.name);
        let repeated = |ts: &[strata::Tensor]| -> Result<Vec<strata::Tensor>> {
            ts.iter().map(|t| repeat_batch(t, batch)).collect()
        };
        let (inputs, expected) = match (repeated(&case.inputs), repeated(&case.outputs)) {
            (Ok(i), Ok(e)) => (i, e),
            (Err(e), _) | (_, Err(e)) => {
                row.strata = EngineResult::failed(chain(&e));
                runners.push(None);
                ort_ok.push(false);
                continue;
            }
        };
        let strata = setup(
            &mut row.strata,
            "Strata",
            &expected,
            || StrataRunner::new(free, &inputs, 1),
            StrataRunner::outputs,
        );
        round_ms += strata.as_ref().map_or(0.0, |s| s.1);
        runners.push(strata.map(|s| s.0));
        ort_ok.push(match (worker.as_deref_mut(), row.ort.as_mut()) {
            (Some(w), Some(result)) => setup_ort(w, result, free, 1, batch, case)
                .map(|ms| round_ms += ms)
                .is_some(),
            _ => false,
        });
    }
    let wanted = options.rounds * BATCH_ROUNDS_FACTOR;
    let rounds = rounds_within(options, wanted, round_ms * BURST as f64);
    eprintln!(
        "[{} batches {batches:?}] {} warm-up + {rounds} timed rounds",
        case.name, options.warmup
    );
    let mut slots = Vec::new();
    let engines = rows.iter_mut().zip(&runners).zip(workers).zip(ort_ok);
    let largest = options.batch;
    for (((row, runner), worker), ort_ok) in engines {
        // A smaller batch runs as many times in a row as the largest batch has items, so
        // each sample covers as many images: its time per image (see the function docs).
        let repeats = (largest / row.batch.max(1)).max(1);
        if let Some(runner) = runner {
            slots.push(Slot {
                result: &mut row.strata,
                run: Box::new(move || per_image_of(repeats, || runner.run_timed())),
            });
        }
        if let (true, Some(w), Some(result)) = (ort_ok, worker, row.ort.as_mut()) {
            slots.push(Slot {
                result,
                run: Box::new(move || per_image_of(repeats, || w.run())),
            });
        }
    }
    time_rounds(&mut slots, options.warmup, rounds);
    drop(slots);
    rows
}

/// The mean time of `repeats` calls of `run` (ms each), timed back to back.
fn per_image_of(repeats: usize, mut run: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut total = 0.0;
    for _ in 0..repeats {
        total += run()?;
    }
    Ok(total / repeats as f64)
}

/// The GEMM line: `n x n x n` f32, one thread, Strata and numpy's sgemm interleaved.
pub fn measure_gemm(options: &Options, worker: Option<&mut OrtWorker>) -> Gemm {
    let n = options.gemm_n;
    eprintln!("[gemm {n}^3] {} warm-up + {} rounds", 1, options.rounds);
    let fill = |seed: u32| -> Vec<f32> {
        let mut state = seed.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
        (0..n * n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    };
    let (a, b, mut c) = (fill(1), fill(2), vec![0.0f32; n * n]);
    let mut gemm = Gemm {
        n,
        strata: EngineResult::default(),
        openblas: worker.as_ref().map(|_| EngineResult::default()),
    };
    let mut slots = vec![Slot {
        result: &mut gemm.strata,
        run: Box::new(|| {
            let start = std::time::Instant::now();
            strata_ops::kernels::linalg::gemm_f32(false, false, n, n, n, 1.0, &a, &b, 0.0, &mut c)?;
            Ok(start.elapsed().as_secs_f64() * 1e3)
        }),
    }];
    if let (Some(w), Some(result)) = (worker, gemm.openblas.as_mut()) {
        slots.push(Slot {
            result,
            run: Box::new(move || w.sgemm(n)),
        });
    }
    time_rounds(&mut slots, 1, options.rounds);
    drop(slots);
    gemm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rotate_and_failures_drop_out() {
        let order = std::cell::RefCell::new(Vec::new());
        let (mut a, mut b) = (EngineResult::default(), EngineResult::default());
        let mut slots = vec![
            Slot {
                result: &mut a,
                run: Box::new(|| {
                    order.borrow_mut().push('a');
                    Ok(1.0)
                }),
            },
            Slot {
                result: &mut b,
                run: Box::new(|| {
                    order.borrow_mut().push('b');
                    anyhow::bail!("boom")
                }),
            },
        ];
        time_rounds(&mut slots, 1, 2);
        drop(slots);
        // Bursts of three, the first untimed; `b` drops out at its first run.
        let want: Vec<char> = "aaabaaaaaa".chars().collect();
        assert_eq!(order.into_inner(), want);
        assert_eq!(a.samples_ms, [1.0; 4]);
        assert_eq!(b.error.as_deref(), Some("boom"));
    }

    #[test]
    fn rounds_fit_the_budget() {
        let mut o = crate::options::parse_args(Vec::new()).unwrap().unwrap();
        o.budget_s = 10.0;
        assert_eq!(rounds_for(&o, 100.0), 10);
        assert_eq!(rounds_for(&o, 2000.0), 5);
        assert_eq!(rounds_for(&o, 1e6), 3);
    }
}
