//! `compare`: Strata against tract on the test models.
//!
//! For each model folder it loads the model with both engines, checks the first run of each
//! against the onnxruntime reference outputs (ONNX rule `|a - e| <= 1e-7 + 1e-3 |e|`), then
//! times them interleaved round by round (Strata, tract, Strata, ...) so that both see the
//! same machine load. It prints a markdown table and writes it to `<out>/report.md`, with the
//! raw numbers in `<out>/report.json`. An engine that fails to load or run a model is
//! reported in the table; the other models still run.
//!
//! ```text
//! cargo run --release -p strata-benches --bin compare -- [--quick] [--models a,b] [--rounds R]
//!     [--warmup W] [--threads T] [--testdata DIR] [--out DIR]
//! ```

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use strata::{DType, Dim, Model, Session, SessionOptions, Tensor};
use strata_benches::accuracy::{self, Check};
use strata_benches::stats::{median, min, percentile};
use strata_benches::testdata::{self, TestCase};
use tract_onnx::prelude::{
    Framework, InferenceFact, InferenceModelExt, IntoRunnable, TValue, TVec, TypedRunnableModel,
};

const USAGE: &str = "\
Usage: compare [OPTIONS]

Times Strata against tract on the test models and writes target/bench/report.md (+ .json).

Options:
  --models a,b,c   model folders: names under <testdata>/models or paths (default: all 11)
  --quick          light_squeezenet, mobilenetv2, bert_encoder; 5 rounds, 1 warm-up
  --rounds R       timed rounds per engine (default 10)
  --warmup W       untimed rounds per engine before timing (default 2)
  --threads T      Strata threads, 0 = one per core (default 1; tract runs on one thread)
  --testdata DIR   test-data root (default: $STRATA_TESTDATA or <workspace>/testdata)
  --out DIR        report folder (default: <workspace>/target/bench)
  -h, --help       print this message
";

/// Command-line options.
#[derive(Debug)]
struct Options {
    models: Vec<String>,
    rounds: usize,
    warmup: usize,
    threads: usize,
    testdata: PathBuf,
    out: PathBuf,
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the benches crate lives one level below the workspace root")
        .to_path_buf()
}

/// Parses the arguments after the program name; `None` means help was asked for.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>> {
    let mut models: Option<Vec<String>> = None;
    let (mut rounds, mut warmup, mut threads) = (None, None, 1);
    let mut quick = false;
    let mut testdata = testdata::default_dir();
    let mut out = workspace_root().join("target/bench");
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Result<String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| anyhow!("`{flag}` needs a value"))
        };
        let number = |v: String, flag: &str| -> Result<usize> {
            v.parse()
                .with_context(|| format!("`{flag}` expects a whole number, got `{v}`"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => quick = true,
            "--models" => {
                models = Some(
                    value()?
                        .split(',')
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect(),
                )
            }
            "--rounds" => rounds = Some(number(value()?, "--rounds")?),
            "--warmup" => warmup = Some(number(value()?, "--warmup")?),
            "--threads" => threads = number(value()?, "--threads")?,
            "--testdata" => testdata = PathBuf::from(value()?),
            "--out" => out = PathBuf::from(value()?),
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    let default_models = if quick {
        testdata::QUICK_MODELS
    } else {
        testdata::ALL_MODELS
    };
    let options = Options {
        models: models.unwrap_or_else(|| default_models.iter().map(|m| m.to_string()).collect()),
        rounds: rounds.unwrap_or(if quick { 5 } else { 10 }),
        warmup: warmup.unwrap_or(if quick { 1 } else { 2 }),
        threads,
        testdata,
        out,
    };
    if options.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if options.models.is_empty() {
        bail!("--models names no model");
    }
    Ok(Some(options))
}

/// What one engine did on one model.
#[derive(Debug, Default)]
struct EngineResult {
    /// Timed runs, milliseconds.
    samples_ms: Vec<f64>,
    /// The first run's outputs against the reference.
    check: Option<Check>,
    /// Why the engine could not load or run the model.
    error: Option<String>,
}

impl EngineResult {
    fn failed(error: impl std::fmt::Display) -> Self {
        EngineResult {
            error: Some(error.to_string()),
            ..Default::default()
        }
    }

    fn median_ms(&self) -> Option<f64> {
        (!self.samples_ms.is_empty()).then(|| median(&self.samples_ms))
    }

    fn to_json(&self) -> Json {
        json!({
            "median_ms": self.median_ms(),
            "min_ms": (!self.samples_ms.is_empty()).then(|| min(&self.samples_ms)),
            "p90_ms": (!self.samples_ms.is_empty()).then(|| percentile(&self.samples_ms, 0.9)),
            "samples_ms": self.samples_ms,
            "max_abs_diff": self.check.as_ref().map(|c| c.max_abs_diff),
            "mismatches": self.check.as_ref().map(|c| c.mismatches),
            "passed": self.check.as_ref().map(Check::passed),
            "error": self.error,
        })
    }

    /// The accuracy cell: `3.2e-6 ok`, `1.5e-2 FAIL (12)` or the error.
    fn accuracy_cell(&self) -> String {
        if let Some(e) = &self.error {
            return format!("error: {}", short(e));
        }
        match &self.check {
            Some(c) if c.passed() => format!("{:.1e} ok", c.max_abs_diff),
            Some(c) if !c.shape_ok => "FAIL (shape)".into(),
            Some(c) => format!("{:.1e} FAIL ({} elems)", c.max_abs_diff, c.mismatches),
            None => "-".into(),
        }
    }
}

/// One line of the report.
#[derive(Debug)]
struct Row {
    model: String,
    flops: Option<u64>,
    strata: EngineResult,
    tract: EngineResult,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        Some(self.tract.median_ms()? / self.strata.median_ms()?)
    }

    fn gflops_per_s(&self) -> Option<f64> {
        let flops = self.flops.filter(|&f| f > 0)? as f64;
        Some(flops / (self.strata.median_ms()? * 1e-3) / 1e9)
    }
}

/// A one-line, table-safe, bounded rendering of an error message.
fn short(message: &str) -> String {
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

/// Runs `f`, turning a panic into an error.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
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
fn chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

// ----- Strata ---------------------------------------------------------------------------------

/// A Strata session with its named inputs.
struct StrataRunner {
    model: Model,
    session: Session,
    inputs: Vec<(String, Tensor)>,
}

impl StrataRunner {
    fn new(case: &TestCase, threads: usize) -> Result<Self> {
        let model = Model::load(&case.model_path)?;
        let session = model.session(SessionOptions::default().with_threads(threads))?;
        let names = model.inputs();
        if names.len() != case.inputs.len() {
            bail!(
                "model has {} inputs, test data {}",
                names.len(),
                case.inputs.len()
            );
        }
        let inputs = names
            .into_iter()
            .map(|i| i.name)
            .zip(case.inputs.iter().cloned())
            .collect();
        Ok(StrataRunner {
            model,
            session,
            inputs,
        })
    }

    fn run(&self) -> Result<Vec<(Vec<usize>, Vec<f64>)>> {
        let outputs = self.session.run(self.inputs.clone())?;
        outputs
            .iter()
            .map(|(name, value)| {
                let t = value
                    .as_tensor()
                    .ok_or_else(|| anyhow!("output {name} is not a tensor"))?;
                Ok((t.shape().to_vec(), t.cast(DType::F64)?.to_vec::<f64>()?))
            })
            .collect()
    }

    /// FLOPs of one run with the symbolic input sizes bound to the test inputs' sizes.
    fn flops(&self) -> Result<u64> {
        let mut bindings = BTreeMap::new();
        for (info, (_, tensor)) in self.model.inputs().iter().zip(&self.inputs) {
            for (dim, &size) in info.dims.iter().flatten().zip(tensor.shape()) {
                if let Dim::Symbol(s) = dim {
                    bindings.insert(s.clone(), size);
                }
            }
        }
        Ok(self.model.estimate_flops(&bindings)?)
    }
}

// ----- tract ----------------------------------------------------------------------------------

/// A tract plan with its inputs.
struct TractRunner {
    plan: Arc<TypedRunnableModel>,
    inputs: TVec<TValue>,
}

/// A Strata tensor as a tract tensor.
fn to_tract(t: &Tensor) -> Result<tract_onnx::prelude::Tensor> {
    use tract_onnx::prelude::Tensor as T;
    let shape = t.shape();
    Ok(match t.dtype() {
        DType::F32 => T::from_shape(shape, &t.to_vec::<f32>()?)?,
        DType::F64 => T::from_shape(shape, &t.to_vec::<f64>()?)?,
        DType::I64 => T::from_shape(shape, &t.to_vec::<i64>()?)?,
        DType::I32 => T::from_shape(shape, &t.to_vec::<i32>()?)?,
        DType::I8 => T::from_shape(shape, &t.to_vec::<i8>()?)?,
        DType::U8 => T::from_shape(shape, &t.to_vec::<u8>()?)?,
        other => bail!("no conversion of {other} inputs to tract"),
    })
}

impl TractRunner {
    fn new(case: &TestCase) -> Result<Self> {
        let inputs: Vec<tract_onnx::prelude::Tensor> =
            case.inputs.iter().map(to_tract).collect::<Result<_>>()?;
        let mut model = tract_onnx::onnx()
            .model_for_path(&case.model_path)
            .map_err(|e| anyhow!("{e:#}"))?;
        for (i, t) in inputs.iter().enumerate() {
            let fact = InferenceFact::dt_shape(t.datum_type(), t.shape());
            model = model
                .with_input_fact(i, fact)
                .map_err(|e| anyhow!("{e:#}"))?;
        }
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| anyhow!("{e:#}"))?;
        Ok(TractRunner {
            plan,
            inputs: inputs.into_iter().map(TValue::from).collect(),
        })
    }

    fn run(&self) -> Result<Vec<(Vec<usize>, Vec<f64>)>> {
        let outputs = self
            .plan
            .run(self.inputs.clone())
            .map_err(|e| anyhow!("{e:#}"))?;
        outputs
            .iter()
            .map(|v| {
                let t = v.cast_to::<f64>().map_err(|e| anyhow!("{e:#}"))?;
                let data = t
                    .to_plain_array_view::<f64>()
                    .map_err(|e| anyhow!("{e:#}"))?;
                // Row-major order whatever the view's layout.
                Ok((t.shape().to_vec(), data.iter().copied().collect()))
            })
            .collect()
    }
}

// ----- measuring ------------------------------------------------------------------------------

/// Checks an engine's outputs against the reference outputs.
fn check_outputs(actual: &[(Vec<usize>, Vec<f64>)], case: &TestCase) -> Result<Check> {
    if actual.len() < case.outputs.len() {
        bail!(
            "{} outputs, the reference has {}",
            actual.len(),
            case.outputs.len()
        );
    }
    let mut merged: Option<Check> = None;
    for ((shape, data), expected) in actual.iter().zip(&case.outputs) {
        let e = expected.cast(DType::F64)?.to_vec::<f64>()?;
        let c = accuracy::check(shape, data, expected.shape(), &e);
        merged = Some(match merged {
            Some(m) => m.merge(c),
            None => c,
        });
    }
    merged.ok_or_else(|| anyhow!("no outputs"))
}

/// Loads, checks and times both engines on one model.
fn measure(options: &Options, model: &str) -> Row {
    let mut row = Row {
        model: model.to_string(),
        flops: None,
        strata: EngineResult::default(),
        tract: EngineResult::default(),
    };
    let dir = if Path::new(model).join("model.onnx").is_file() {
        PathBuf::from(model)
    } else {
        options.testdata.join("models").join(model)
    };
    let case = match TestCase::load_dir(&dir) {
        Ok(case) => case,
        Err(e) => {
            let e = chain(&e);
            row.strata = EngineResult::failed(&e);
            row.tract = EngineResult::failed(&e);
            return row;
        }
    };
    row.model = case.name.clone();

    eprintln!("[{}] loading and checking", case.name);
    let strata = guarded("Strata", || {
        let runner = StrataRunner::new(&case, options.threads)?;
        let check = check_outputs(&runner.run()?, &case)?;
        Ok((runner, check))
    });
    let strata = match strata {
        Ok((runner, check)) => {
            row.flops = runner.flops().ok();
            row.strata.check = Some(check);
            Some(runner)
        }
        Err(e) => {
            row.strata = EngineResult::failed(chain(&e));
            None
        }
    };
    let tract = guarded("tract", || {
        let runner = TractRunner::new(&case)?;
        let check = check_outputs(&runner.run()?, &case)?;
        Ok((runner, check))
    });
    let tract = match tract {
        Ok((runner, check)) => {
            row.tract.check = Some(check);
            Some(runner)
        }
        Err(e) => {
            row.tract = EngineResult::failed(chain(&e));
            None
        }
    };

    eprintln!(
        "[{}] {} warm-up + {} timed rounds",
        case.name, options.warmup, options.rounds
    );
    let (mut strata, mut tract) = (strata, tract);
    for round in 0..options.warmup + options.rounds {
        let timed = round >= options.warmup;
        if let Some(runner) = &strata {
            let start = Instant::now();
            let result = guarded("Strata", || runner.run().map(drop));
            let ms = start.elapsed().as_secs_f64() * 1e3;
            match result {
                Ok(()) if timed => row.strata.samples_ms.push(ms),
                Ok(()) => {}
                Err(e) => {
                    row.strata.error = Some(chain(&e));
                    strata = None;
                }
            }
        }
        if let Some(runner) = &tract {
            let start = Instant::now();
            let result = guarded("tract", || runner.run().map(drop));
            let ms = start.elapsed().as_secs_f64() * 1e3;
            match result {
                Ok(()) if timed => row.tract.samples_ms.push(ms),
                Ok(()) => {}
                Err(e) => {
                    row.tract.error = Some(chain(&e));
                    tract = None;
                }
            }
        }
    }
    row
}

// ----- report ---------------------------------------------------------------------------------

/// The CPU model name from /proc/cpuinfo, when there is one.
fn cpu_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, name)| name.trim().to_string())
}

fn logical_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn fmt_opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// The report as markdown.
fn markdown(options: &Options, rows: &[Row]) -> String {
    let threads = if options.threads == 0 {
        format!("one per core ({})", logical_cpus())
    } else {
        options.threads.to_string()
    };
    let mut md = String::from("# Strata vs tract\n\n");
    md.push_str(&format!(
        "Machine: {} ({} logical CPUs). Strata threads: {threads}; tract: 1 thread.\n\
         {} warm-up + {} timed rounds per engine, interleaved (Strata, tract, Strata, ...); \
         times are medians in ms.\n\
         Accuracy: max |output - onnxruntime reference| of the first run; `ok` when every \
         element is within 1e-7 + 1e-3·|ref|.\n\n",
        cpu_name().unwrap_or_else(|| std::env::consts::ARCH.to_string()),
        logical_cpus(),
        options.warmup,
        options.rounds,
    ));
    md.push_str(
        "| model | GFLOP | Strata ms | tract ms | tract/Strata | Strata GFLOP/s \
         | Strata accuracy | tract accuracy |\n\
         |---|---:|---:|---:|---:|---:|---|---|\n",
    );
    for row in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            row.model,
            fmt_opt(row.flops.map(|f| f as f64 / 1e9), 3),
            fmt_opt(row.strata.median_ms(), 2),
            fmt_opt(row.tract.median_ms(), 2),
            fmt_opt(row.ratio(), 2),
            fmt_opt(row.gflops_per_s(), 2),
            row.strata.accuracy_cell(),
            row.tract.accuracy_cell(),
        ));
    }
    md
}

/// The report as JSON.
fn json_report(options: &Options, rows: &[Row]) -> Json {
    json!({
        "machine": { "cpu": cpu_name(), "logical_cpus": logical_cpus(), "arch": std::env::consts::ARCH },
        "strata_threads": options.threads,
        "tract_threads": 1,
        "warmup": options.warmup,
        "rounds": options.rounds,
        "models": rows.iter().map(|r| json!({
            "model": r.model,
            "flops": r.flops,
            "ratio_tract_over_strata": r.ratio(),
            "strata_gflops_per_s": r.gflops_per_s(),
            "strata": r.strata.to_json(),
            "tract": r.tract.to_json(),
        })).collect::<Vec<_>>(),
    })
}

fn main() -> Result<()> {
    let Some(options) = parse_args(std::env::args().skip(1))? else {
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
    let rows: Vec<Row> = options
        .models
        .iter()
        .map(|m| measure(&options, m))
        .collect();
    let md = markdown(&options, &rows);
    println!("{md}");
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let md_path = options.out.join("report.md");
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    let json_path = options.out.join("report.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&json_report(&options, &rows))? + "\n",
    )
    .with_context(|| format!("writing {}", json_path.display()))?;
    println!("report: {}", md_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Options {
        parse_args(s.split_whitespace().map(str::to_owned))
            .unwrap()
            .unwrap()
    }

    #[test]
    fn options() {
        let o = parse("--quick");
        assert_eq!(o.models, testdata::QUICK_MODELS);
        assert_eq!((o.rounds, o.warmup, o.threads), (5, 1, 1));
        let o = parse("--models a,b --rounds=3 --threads 2 --quick");
        assert_eq!(o.models, ["a", "b"]);
        assert_eq!((o.rounds, o.threads), (3, 2));
        assert_eq!(parse("").models.len(), testdata::ALL_MODELS.len());
        assert!(parse_args(["--help".to_string()]).unwrap().is_none());
        assert!(parse_args(["--rounds".to_string(), "x".into()]).is_err());
        assert!(parse_args(["--bogus".to_string()]).is_err());
    }

    #[test]
    fn short_messages() {
        assert_eq!(short("a |\n b"), "a / b");
        assert_eq!(short(&"x".repeat(200)).chars().count(), 90);
    }
}
