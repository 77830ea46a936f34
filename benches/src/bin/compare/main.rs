//! `compare`: Strata against onnxruntime and tract on the test models (`cargo xtask bench`).
//!
//! For each model and thread count it loads the model with each engine, checks the first
//! run against the onnxruntime reference outputs (ONNX rule `|a - e| <= 1e-7 + 1e-3 |e|`),
//! then times the engines interleaved round by round ([`measure`]). Then, per model, load
//! time and peak memory in fresh processes ([`probe`]); batch scaling on a copy of a few
//! models with the batch dim freed; and a 1024^3 GEMM against OpenBLAS. onnxruntime runs in
//! a Python worker ([`strata_benches::ort`]). The markdown report ([`report`]) is printed
//! and written to `<out>/report.md` (and `--doc PATH`), the raw numbers to `report.json`.
//! An engine that fails on a model is reported in the tables; everything else still runs.
//!
//! ```text
//! cargo run --release -p strata-benches --bin compare -- [--quick] [--models a,b] ...
//! ```

mod measure;
mod options;
mod probe;
mod report;

use anyhow::{bail, Context, Result};
use measure::{chain, BatchRow, EngineResult, Row};
use options::{parse_args, worker_script, Options, USAGE};
use report::Report;
use std::path::{Path, PathBuf};
use std::process::Command;
use strata_benches::machine::{self, Machine};
use strata_benches::ort::OrtWorker;
use strata_benches::testdata::TestCase;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "probe") {
        return probe::run_probe(&args[1..]);
    }
    let Some(options) = parse_args(args)? else {
        print!("{USAGE}");
        return Ok(());
    };
    let needs_root = options
        .models
        .iter()
        .any(|m| !Path::new(m).join("model.onnx").is_file());
    if needs_root && !options.testdata.join("models").is_dir() {
        bail!(
            "no test models in {} (run `cargo xtask testdata`, or pass --testdata DIR)",
            options.testdata.join("models").display()
        );
    }
    let report = run(&options)?;
    write_report(&options, &report)
}

/// Starts the onnxruntime worker, or says why there is none.
fn start_worker(options: &Options) -> Option<OrtWorker> {
    let python = options.python.as_ref().or_else(|| {
        eprintln!("note: no Python venv (target/pyenv; --python PATH): onnxruntime left out");
        None
    })?;
    OrtWorker::spawn(python, &worker_script())
        .map_err(|e| eprintln!("note: onnxruntime left out: {}", chain(&e)))
        .ok()
}

/// The versions the report lists.
fn versions(worker: Option<&mut OrtWorker>) -> Vec<(String, String)> {
    let root = options::workspace_root();
    let unknown = || "unknown".to_string();
    let mut v = vec![
        (
            "Strata".into(),
            format!(
                "{} (commit {})",
                env!("CARGO_PKG_VERSION"),
                machine::git_commit(&root).unwrap_or_else(unknown)
            ),
        ),
        (
            "rustc".into(),
            machine::rustc_version().unwrap_or_else(unknown),
        ),
        (
            "tract-onnx".into(),
            machine::locked_version(&root, "tract-onnx").unwrap_or_else(unknown),
        ),
    ];
    if let Some(info) = worker.and_then(|w| w.info().ok()) {
        let s = |k: &str| info[k].as_str().map_or_else(unknown, str::to_string);
        v.push(("onnxruntime".into(), s("onnxruntime")));
        v.push(("numpy".into(), s("numpy")));
        v.push(("Python".into(), s("python")));
        let blas = info["blas"].as_array().and_then(|b| b.first()).map(|b| {
            format!(
                "{} {} ({})",
                b["internal_api"].as_str().unwrap_or("?"),
                b["version"].as_str().unwrap_or("?"),
                b["architecture"].as_str().unwrap_or("?"),
            )
        });
        v.push(("numpy BLAS".into(), blas.unwrap_or_else(unknown)));
    }
    v
}

/// Rows for a model whose test case could not be read.
fn failed_rows(options: &Options, model: &str, error: &str) -> Vec<Row> {
    let failed = || EngineResult {
        error: Some(error.to_string()),
        ..Default::default()
    };
    options
        .threads
        .iter()
        .map(|&threads| Row {
            model: model.to_string(),
            threads,
            flops: None,
            rounds: 0,
            strata: failed(),
            ort: None,
            tract: None,
        })
        .collect()
}

/// A copy of `case`'s model with a free batch dim under `<out>/batch/`.
fn batch_free_copy(options: &Options, python: &Path, case: &TestCase) -> Result<PathBuf> {
    let dir = options.out.join("batch");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dst = dir.join(format!("{}.onnx", case.name));
    let status = Command::new(python)
        .arg(worker_script())
        .arg("free-batch")
        .arg(&case.model_path)
        .arg(&dst)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .status()
        .context("running ort_worker.py free-batch")?;
    if !status.success() {
        bail!("ort_worker.py free-batch failed ({status})");
    }
    Ok(dst)
}

fn batch_rows(options: &Options, worker: Option<&mut OrtWorker>) -> Vec<BatchRow> {
    let (Some(python), true) = (&options.python, options.batch > 1) else {
        return Vec::new();
    };
    // A second onnxruntime worker holds the batch-N session while the first holds batch 1.
    let mut second = worker.as_ref().and_then(|_| start_worker(options));
    let mut worker = worker;
    let mut rows = Vec::new();
    for model in &options.batch_models {
        let free = measure::load_case(options, model)
            .map_err(anyhow::Error::msg)
            .and_then(|case| Ok((batch_free_copy(options, python, &case)?, case)));
        match free {
            Ok((path, case)) => {
                let workers = worker.as_deref_mut().into_iter().chain(second.as_mut());
                rows.extend(measure::measure_batches(
                    options,
                    &case,
                    &path,
                    workers.collect(),
                ))
            }
            Err(e) => eprintln!("[{model}] batch scaling skipped: {}", chain(&e)),
        }
    }
    rows
}

/// Measures everything the report shows.
fn run(options: &Options) -> Result<Report<'_>> {
    let load_before = machine::load_average();
    let mut worker = start_worker(options);
    let versions = versions(worker.as_mut());
    let mut rows = Vec::new();
    let mut cases = Vec::new();
    for model in &options.models {
        match measure::load_case(options, model) {
            Ok(case) => {
                for &t in &options.threads {
                    rows.push(measure::measure(options, &case, t, worker.as_mut()));
                }
                cases.push(case);
            }
            Err(e) => rows.extend(failed_rows(options, model, &e)),
        }
    }
    let script = worker_script();
    let python = worker.as_ref().and(options.python.as_deref());
    let probes = cases
        .iter()
        .map(|c| probe::probe_model(c, python, &script))
        .collect();
    let batches = batch_rows(options, worker.as_mut());
    let gemm = (options.gemm_n > 0).then(|| measure::measure_gemm(options, worker.as_mut()));
    Ok(Report {
        options,
        machine: Machine::detect(),
        load: [load_before, machine::load_average()],
        versions,
        rows,
        probes,
        batches,
        gemm,
    })
}

fn write_report(options: &Options, report: &Report<'_>) -> Result<()> {
    let md = report.markdown();
    println!("{md}");
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let md_path = options.out.join("report.md");
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    let json_path = options.out.join("report.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&report.json())? + "\n",
    )
    .with_context(|| format!("writing {}", json_path.display()))?;
    println!("report: {}", md_path.display());
    if let Some(doc) = &options.doc {
        std::fs::write(doc, &md).with_context(|| format!("writing {}", doc.display()))?;
        println!("report: {}", doc.display());
    }
    Ok(())
}
