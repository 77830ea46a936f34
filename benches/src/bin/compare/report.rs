//! The report: markdown (printed, `<out>/report.md`, and `docs/performance.md` for the full
//! run) and JSON (`<out>/report.json`). Targets are displayed with whether they are met;
//! nothing here fails on a timing.

use crate::measure::{ratio, BatchRow, EngineResult, Gemm, Row};
use crate::options::Options;
use crate::probe::ProbeRow;
use serde_json::{json, Value as Json};
use std::fmt::Write;
use strata_benches::machine::Machine;

/// Everything measured.
pub struct Report<'a> {
    pub options: &'a Options,
    pub machine: Machine,
    /// (component, version) pairs.
    pub versions: Vec<(String, String)>,
    pub rows: Vec<Row>,
    pub probes: Vec<ProbeRow>,
    pub batches: Vec<BatchRow>,
    pub gemm: Option<Gemm>,
    /// The load average before and after the measurements.
    pub load: [Option<String>; 2],
}

fn fmt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// A one-line, table-safe, bounded rendering of an error message.
pub fn short(message: &str) -> String {
    let line: String = message
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "/");
    if line.chars().count() > 90 {
        format!("{}...", line.chars().take(87).collect::<String>())
    } else {
        line
    }
}

/// The accuracy cell: `3.2e-6`, `1.5e-2 FAIL (12)` or the error.
fn accuracy(r: Option<&EngineResult>) -> String {
    let Some(r) = r else { return "-".into() };
    if let Some(e) = &r.error {
        return format!("error: {}", short(e));
    }
    match &r.check {
        Some(c) if c.passed() => format!("{:.0e}", c.max_abs_diff),
        Some(c) if !c.shape_ok => "FAIL (shape)".into(),
        Some(c) => format!("{:.1e} FAIL ({})", c.max_abs_diff, c.mismatches),
        None => "-".into(),
    }
}

fn geomean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = values
        .into_iter()
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    (!v.is_empty()).then(|| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

fn status(value: Option<f64>, met: impl Fn(f64) -> bool) -> &'static str {
    match value {
        Some(v) if met(v) => "met",
        Some(_) => "**not met**",
        None => "-",
    }
}

impl Report<'_> {
    fn rows_at(&self, threads: usize) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(move |r| r.threads == threads)
    }

    pub fn markdown(&self) -> String {
        let mut md = String::from("# Strata CPU performance\n\n");
        md.push_str(
            "Written by `cargo xtask bench` (do not edit by hand). Strata against \
             onnxruntime (Python API) and tract on the generated test models; see \
             [Method](#method).\n\n",
        );
        self.machine_section(&mut md);
        self.targets_section(&mut md);
        for &t in &self.options.threads {
            self.speed_section(&mut md, t);
        }
        self.probe_section(&mut md);
        self.batch_section(&mut md);
        self.gemm_section(&mut md);
        self.method_section(&mut md);
        md
    }

    fn machine_section(&self, md: &mut String) {
        let m = &self.machine;
        let _ = write!(
            md,
            "## Machine and versions\n\n\
             - CPU: {} ({} logical cores)\n- Flags: {}\n",
            m.cpu,
            m.logical_cpus,
            m.flags_line()
        );
        if let Some(k) = &m.kernel {
            let _ = writeln!(md, "- Linux {k}");
        }
        for (name, version) in &self.versions {
            let _ = writeln!(md, "- {name}: {version}");
        }
        let _ = writeln!(
            md,
            "- Command: `cargo xtask bench`, which runs `{}` (path options left out)",
            self.options.command
        );
        let busy = self.load[0]
            .as_deref()
            .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
            .filter(|&l| l > 0.5 * m.logical_cpus as f64);
        if let Some(l) = busy {
            let _ = writeln!(
                md,
                "- **Note**: the machine was busy (1-minute load average {l} on {} logical \
                 cores) when the run started: the timings are noisy.",
                m.logical_cpus
            );
        }
        let [before, after] = self.load.clone().map(|l| l.unwrap_or_else(|| "-".into()));
        let _ = writeln!(
            md,
            "- Load average (1/5/15 min) before: {before}; after: {after}. Other processes \
             on this machine slow the engines down, the 2-thread runs most.\n"
        );
    }

    fn targets_section(&self, md: &mut String) {
        md.push_str("## Targets\n\nDisplayed, never asserted.\n\n");
        md.push_str("| target | measured | status |\n|---|---:|---|\n");
        let mut line = |target: &str, value: Option<f64>, digits, met: &dyn Fn(f64) -> bool| {
            let _ = writeln!(
                md,
                "| {target} | {} | {} |",
                fmt(value, digits),
                status(value, met)
            );
        };
        for &t in &self.options.threads {
            let ratios: Vec<(String, f64)> = self
                .rows_at(t)
                .filter_map(|r| Some((r.model.clone(), r.strata_over_ort()?)))
                .collect();
            let gm = geomean(ratios.iter().map(|r| r.1));
            line(
                &format!("Strata/ORT geometric mean, {t} thread(s) <= 1.0"),
                gm,
                2,
                &|v| v <= 1.0,
            );
            let worst = ratios.iter().max_by(|a, b| a.1.total_cmp(&b.1));
            line(
                &format!(
                    "Strata/ORT worst model, {t} thread(s) <= 1.15 ({})",
                    worst.map_or("-", |w| w.0.as_str())
                ),
                worst.map(|w| w.1),
                2,
                &|v| v <= 1.15,
            );
        }
        let tract = geomean(self.rows_at(1).filter_map(Row::tract_over_strata));
        line(
            "tract/Strata geometric mean, 1 thread >= 2",
            tract,
            2,
            &|v| v >= 2.0,
        );
        let resnet = self
            .rows_at(1)
            .find(|r| r.model.contains("resnet50"))
            .and_then(Row::gflops_per_s);
        line("ResNet-50, 1 thread: GFLOP/s >= 100", resnet, 1, &|v| {
            v >= 100.0
        });
        let squeeze = self
            .probes
            .iter()
            .find(|p| p.model.contains("squeezenet"))
            .and_then(|p| p.strata.load_to_first_ms());
        line(
            "SqueezeNet load-to-first-result < 50 ms",
            squeeze,
            1,
            &|v| v < 50.0,
        );
        let rss = geomean(
            self.probes
                .iter()
                .filter_map(|p| Some(p.strata.rss_kb? / p.ort.as_ref()?.rss_kb?)),
        );
        line("peak RSS Strata/ORT geometric mean <= 1.0", rss, 2, &|v| {
            v <= 1.0
        });
        for model in self.batch_models() {
            let scaling = self.batch_scaling(&model, |r| Some(&r.strata));
            line(
                &format!(
                    "{model}: Strata batch-{} per-image / batch-1 <= 1.0",
                    self.options.batch
                ),
                scaling,
                2,
                &|v| v <= 1.0,
            );
        }
        let gemm = self
            .gemm
            .as_ref()
            .and_then(|g| Some(g.gflops_per_s(&g.strata)? / g.gflops_per_s(g.openblas.as_ref()?)?));
        let n = self.options.gemm_n;
        let gemm_target = format!("GEMM {n}^3 f32, 1 thread: Strata/OpenBLAS >= 0.95");
        line(&gemm_target, gemm, 2, &|v| v >= 0.95);
        md.push('\n');
    }

    fn speed_section(&self, md: &mut String, threads: usize) {
        let _ = write!(
            md,
            "## Inference time, {threads} thread(s)\n\n\
             Medians in ms. Strata/ORT < 1 means Strata is faster; tract runs on one thread \
             and appears in the 1-thread table only. Accuracy: max |output - reference| of \
             the first run (`FAIL` when an element is outside 1e-7 + 1e-3·|ref|).\n\n\
             | model | GFLOP | Strata ms | ORT ms | Strata/ORT | tract ms | tract/Strata \
             | Strata GFLOP/s | rounds | accuracy Strata / ORT / tract |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
        );
        for row in self.rows_at(threads) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} |",
                row.model,
                fmt(row.flops.map(|f| f as f64 / 1e9), 3),
                fmt(row.strata.median_ms(), 2),
                fmt(row.ort.as_ref().and_then(EngineResult::median_ms), 2),
                fmt(row.strata_over_ort(), 2),
                fmt(row.tract.as_ref().and_then(EngineResult::median_ms), 2),
                fmt(row.tract_over_strata(), 2),
                fmt(row.gflops_per_s(), 1),
                row.rounds,
                accuracy(Some(&row.strata)),
                accuracy(row.ort.as_ref()),
                accuracy(row.tract.as_ref()),
            );
        }
        let gm = geomean(self.rows_at(threads).filter_map(Row::strata_over_ort));
        let _ = writeln!(md, "\nGeometric mean of Strata/ORT: {}.\n", fmt(gm, 2));
    }

    fn probe_section(&self, md: &mut String) {
        if self.probes.is_empty() {
            return;
        }
        md.push_str(
            "## Load time and peak memory, 1 thread\n\n\
             Each engine in a fresh process: load-to-first-result (model file to first \
             output, ms) and peak RSS growth (MB) over the process's peak before loading.\n\n\
             | model | Strata load+1st ms | ORT load+1st ms | tract load+1st ms \
             | Strata RSS MB | ORT RSS MB | tract RSS MB | RSS Strata/ORT |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for p in &self.probes {
            let cell = |p: Option<&crate::probe::Probe>, v: Option<f64>| match p {
                Some(p) if p.error.is_some() => {
                    format!("error: {}", short(p.error.as_deref().unwrap_or("")))
                }
                _ => fmt(v, 1),
            };
            let ort = p.ort.as_ref();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                p.model,
                cell(Some(&p.strata), p.strata.load_to_first_ms()),
                cell(ort, ort.and_then(|o| o.load_to_first_ms())),
                cell(Some(&p.tract), p.tract.load_to_first_ms()),
                cell(Some(&p.strata), p.strata.rss_mb()),
                cell(ort, ort.and_then(|o| o.rss_mb())),
                cell(Some(&p.tract), p.tract.rss_mb()),
                fmt(
                    p.strata
                        .rss_kb
                        .zip(ort.and_then(|o| o.rss_kb))
                        .map(|(s, o)| s / o),
                    2
                ),
            );
        }
        md.push('\n');
    }

    fn batch_models(&self) -> Vec<String> {
        let mut models: Vec<String> = self.batches.iter().map(|b| b.model.clone()).collect();
        models.dedup();
        models
    }

    /// Per-image time at the large batch over per-image time at batch 1.
    fn batch_scaling(
        &self,
        model: &str,
        engine: impl Fn(&BatchRow) -> Option<&EngineResult>,
    ) -> Option<f64> {
        let at = |b: usize| {
            let row = self
                .batches
                .iter()
                .find(|r| r.model == model && r.batch == b)?;
            Some(engine(row)?.median_ms()? / b as f64)
        };
        Some(at(self.options.batch)? / at(1)?)
    }

    fn batch_section(&self, md: &mut String) {
        if self.batches.is_empty() {
            return;
        }
        let _ = write!(
            md,
            "## Batch scaling, 1 thread\n\n\
             The model with its batch dim freed (copy under target/bench/batch), inputs \
             repeated along the batch; ms per image. Both batch sizes of both engines take \
             turns in the same rounds (onnxruntime in one worker per batch size), up to \
             {f} times as many rounds as above, budget permitting. A batch-1 sample is the \
             mean of as many runs in a row as the larger batch has items (the time per image \
             of that many images taken one at a time), so that samples of either batch size \
             cover as many images.\n\n\
             | model | batch | Strata ms/image | ORT ms/image | Strata/ORT | accuracy Strata / ORT |\n\
             |---|---:|---:|---:|---:|---|\n",
            f = crate::measure::BATCH_ROUNDS_FACTOR,
        );
        for r in &self.batches {
            let per = |e: Option<&EngineResult>| Some(e?.median_ms()? / r.batch as f64);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} / {} |",
                r.model,
                r.batch,
                fmt(per(Some(&r.strata)), 2),
                fmt(per(r.ort.as_ref()), 2),
                fmt(ratio(&r.strata, r.ort.as_ref()), 2),
                accuracy(Some(&r.strata)),
                accuracy(r.ort.as_ref()),
            );
        }
        md.push('\n');
        for model in self.batch_models() {
            let _ = writeln!(
                md,
                "{model}: batch-{b} per-image time / batch-1: Strata {}, ORT {}.",
                fmt(self.batch_scaling(&model, |r| Some(&r.strata)), 2),
                fmt(self.batch_scaling(&model, |r| r.ort.as_ref()), 2),
                b = self.options.batch,
            );
        }
        md.push('\n');
    }

    fn gemm_section(&self, md: &mut String) {
        let Some(g) = &self.gemm else { return };
        let _ = write!(
            md,
            "## GEMM\n\n\
             {n}x{n}x{n} f32, one thread: Strata `strata_ops::kernels::linalg::gemm_f32` \
             against numpy's matmul (OpenBLAS sgemm, OPENBLAS_NUM_THREADS=1), interleaved.\n\n\
             | engine | median ms | GFLOP/s |\n|---|---:|---:|\n\
             | Strata | {} | {} |\n| OpenBLAS | {} | {} |\n\n\
             Strata/OpenBLAS throughput: {}.\n\n",
            fmt(g.strata.median_ms(), 2),
            fmt(g.gflops_per_s(&g.strata), 1),
            fmt(g.openblas.as_ref().and_then(EngineResult::median_ms), 2),
            fmt(g.openblas.as_ref().and_then(|o| g.gflops_per_s(o)), 1),
            fmt(
                g.openblas
                    .as_ref()
                    .and_then(|o| Some(g.gflops_per_s(&g.strata)? / g.gflops_per_s(o)?)),
                2
            ),
            n = g.n,
        );
        if let Some(e) = &g.strata.error {
            let _ = writeln!(md, "Strata error: {}\n", short(e));
        }
    }

    fn method_section(&self, md: &mut String) {
        let o = self.options;
        let _ = write!(
            md,
            "## Method\n\n\
             - Inputs: each model's `test_data_set_0` inputs, the ones its onnxruntime \
             reference outputs were computed from.\n\
             - Accuracy is checked before timing: each engine's first run against the \
             reference outputs with the ONNX backend-test rule |a - e| <= 1e-7 + 1e-3·|e|.\n\
             - Timing: {w} untimed warm-up round(s), then up to {r} timed rounds; a round runs \
             Strata, tract and onnxruntime in turn, each {burst} times in a row, the first of \
             which rewarms its caches after the other engines and is not timed (interleaved; \
             each round starts one engine later than the previous one). Before each engine's \
             runs the harness idles {settle} ms, so that the threads of the engine that ran \
             before have stopped spinning (onnxruntime's idle workers keep a core busy for \
             about 25 ms after a run, Strata's for about 2 ms) and each engine is timed on a \
             quiet machine. The number of rounds drops (to no fewer than 3) when the first runs say {r} rounds would take \
             more than {b} s. Tables show medians.\n\
             - Strata: `Session::run` timed in-process (`SessionOptions::threads` = the \
             table's thread count). tract: `SimplePlan::run`, optimized plan, its default \
             single thread. onnxruntime: a Python worker (`xtask/python/bench/ort_worker.py`) \
             times `InferenceSession.run` with `perf_counter`; intra_op_num_threads = the \
             table's thread count, inter_op_num_threads = 1, sequential execution, all graph \
             optimizations, CPU provider, other settings as shipped (thread spinning on).\n\
             - GFLOP counts come from Strata's cost model (`Model::estimate_flops`, 2 FLOPs \
             per multiply-add).\n\
             - Load and memory probes: each engine runs in a fresh process that reads the \
             inputs, notes its peak RSS (`VmHWM` in /proc/self/status), loads the model, runs \
             it once (load-to-first-result) and three more times, and reports the growth of \
             its peak RSS. For onnxruntime the noted value is taken after importing numpy and \
             onnxruntime.\n",
            w = o.warmup,
            r = o.rounds,
            b = o.budget_s,
            burst = crate::measure::BURST,
            settle = crate::measure::SETTLE.as_millis(),
        );
    }

    pub fn json(&self) -> Json {
        let m = &self.machine;
        json!({
            "machine": { "cpu": m.cpu, "logical_cpus": m.logical_cpus,
                         "flags": m.flags.iter().filter(|f| f.1).map(|f| f.0).collect::<Vec<_>>() },
            "versions": self.versions.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "command": self.options.command,
            "warmup": self.options.warmup,
            "rounds": self.options.rounds,
            "models": self.rows.iter().map(|r| json!({
                "model": r.model, "threads": r.threads, "flops": r.flops, "rounds": r.rounds,
                "strata_over_ort": r.strata_over_ort(),
                "tract_over_strata": r.tract_over_strata(),
                "strata_gflops_per_s": r.gflops_per_s(),
                "strata": r.strata.to_json(),
                "ort": r.ort.as_ref().map(EngineResult::to_json),
                "tract": r.tract.as_ref().map(EngineResult::to_json),
            })).collect::<Vec<_>>(),
            "probes": self.probes.iter().map(|p| json!({
                "model": p.model, "strata": p.strata.to_json(),
                "ort": p.ort.as_ref().map(|o| o.to_json()), "tract": p.tract.to_json(),
            })).collect::<Vec<_>>(),
            "batches": self.batches.iter().map(|b| json!({
                "model": b.model, "batch": b.batch, "strata": b.strata.to_json(),
                "ort": b.ort.as_ref().map(EngineResult::to_json),
            })).collect::<Vec<_>>(),
            "gemm": self.gemm.as_ref().map(|g| json!({
                "n": g.n, "strata": g.strata.to_json(),
                "openblas": g.openblas.as_ref().map(EngineResult::to_json),
                "strata_gflops_per_s": g.gflops_per_s(&g.strata),
                "openblas_gflops_per_s": g.openblas.as_ref().and_then(|o| g.gflops_per_s(o)),
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(short("a |\n b"), "a / b");
        assert_eq!(short(&"x".repeat(200)).chars().count(), 90);
        assert!((geomean([2.0, 8.0]).unwrap() - 4.0).abs() < 1e-12);
        assert!(geomean([]).is_none());
        assert_eq!(status(Some(0.9), |v| v <= 1.0), "met");
        assert_eq!(status(None, |v| v <= 1.0), "-");
    }
}
