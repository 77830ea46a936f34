//! The command line of `compare`.

use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use strata_benches::testdata;

pub const USAGE: &str = "\
Usage: compare [OPTIONS]
       compare probe strata|tract MODEL_DIR THREADS   (one fresh-process load/RSS probe)

Times Strata against onnxruntime and tract on the test models, interleaved round by round,
after checking each engine's outputs against the onnxruntime reference; prints a markdown
report and writes it to <out>/report.md (+ report.json).

Options:
  --models a,b,c   model folders: names under <testdata>/models or paths (default: all 11)
  --quick          light_squeezenet, mobilenetv2, bert_encoder; 5 rounds, 1 warm-up;
                   batch scaling on light_squeezenet only
  --rounds R       timed rounds per engine (default 10)
  --warmup W       untimed rounds per engine before timing (default 2)
  --budget S       seconds of timed rounds per model and thread count; fewer rounds (at
                   least 3) when the first runs say R would take longer (default 30)
  --threads a,b    thread counts of the tables (default 1,2); tract runs on one thread and
                   appears in the 1-thread table only
  --batch N        batch of the batch-scaling section (default 8; 0 skips it)
  --batch-models   models of that section (default light_squeezenet,light_resnet50,
                   light_bvlc_alexnet)
  --gemm N         size of the GEMM line, N x N x N f32 (default 1024; 0 skips it)
  --python PATH    interpreter with onnxruntime and numpy (default: <workspace>/target/pyenv
                   when present; without one, onnxruntime is left out)
  --doc PATH       also write the report to PATH (cargo xtask bench: docs/performance.md)
  --testdata DIR   test-data root (default: $STRATA_TESTDATA or <workspace>/testdata)
  --out DIR        report folder (default: <workspace>/target/bench)
  -h, --help       print this message
";

/// Command-line options.
#[derive(Debug)]
pub struct Options {
    pub models: Vec<String>,
    pub rounds: usize,
    pub warmup: usize,
    pub budget_s: f64,
    pub threads: Vec<usize>,
    pub batch: usize,
    pub batch_models: Vec<String>,
    pub gemm_n: usize,
    pub python: Option<PathBuf>,
    pub doc: Option<PathBuf>,
    pub testdata: PathBuf,
    pub out: PathBuf,
    /// The arguments as given, for the report.
    pub command: String,
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the benches crate lives one level below the workspace root")
        .to_path_buf()
}

/// The onnxruntime worker script.
pub fn worker_script() -> PathBuf {
    workspace_root().join("xtask/python/bench/ort_worker.py")
}

/// The command line for the report, without the machine-specific path options.
fn shown_command(args: &[String]) -> String {
    const PATHS: &[&str] = &["--testdata", "--out", "--python", "--doc"];
    let mut shown = vec!["compare"];
    let mut skip_value = false;
    for arg in args {
        let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if PATHS.contains(&flag) {
            skip_value = !arg.contains('=');
            continue;
        }
        shown.push(arg);
    }
    shown.join(" ")
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

fn number(v: &str, flag: &str) -> Result<usize> {
    v.parse()
        .with_context(|| format!("`{flag}` expects a whole number, got `{v}`"))
}

/// Parses the arguments after the program name; `None` means help was asked for.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>> {
    let args: Vec<String> = args.into_iter().collect();
    let mut o = Options {
        models: Vec::new(),
        rounds: 10,
        warmup: 2,
        budget_s: 30.0,
        threads: vec![1, 2],
        batch: 8,
        batch_models: vec![
            "light_squeezenet".into(),
            "light_resnet50".into(),
            "light_bvlc_alexnet".into(),
        ],
        gemm_n: 1024,
        python: None,
        doc: None,
        testdata: testdata::default_dir(),
        out: workspace_root().join("target/bench"),
        command: shown_command(&args),
    };
    let (mut models, mut rounds, mut warmup, mut batch_models) = (None, None, None, None);
    let mut quick = false;
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
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => quick = true,
            "--models" => models = Some(list(&value()?)),
            "--rounds" => rounds = Some(number(&value()?, "--rounds")?),
            "--warmup" => warmup = Some(number(&value()?, "--warmup")?),
            "--budget" => o.budget_s = number(&value()?, "--budget")? as f64,
            "--threads" => {
                o.threads = list(&value()?)
                    .iter()
                    .map(|t| number(t, "--threads"))
                    .collect::<Result<_>>()?
            }
            "--batch" => o.batch = number(&value()?, "--batch")?,
            "--batch-models" => batch_models = Some(list(&value()?)),
            "--gemm" => o.gemm_n = number(&value()?, "--gemm")?,
            "--python" => o.python = Some(PathBuf::from(value()?)),
            "--doc" => o.doc = Some(PathBuf::from(value()?)),
            "--testdata" => o.testdata = PathBuf::from(value()?),
            "--out" => o.out = PathBuf::from(value()?),
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    let defaults = if quick {
        testdata::QUICK_MODELS
    } else {
        testdata::ALL_MODELS
    };
    o.models = models.unwrap_or_else(|| defaults.iter().map(|m| m.to_string()).collect());
    o.rounds = rounds.unwrap_or(if quick { 5 } else { 10 });
    o.warmup = warmup.unwrap_or(if quick { 1 } else { 2 });
    if quick {
        o.batch_models.truncate(1);
    }
    if let Some(b) = batch_models {
        o.batch_models = b;
    }
    if o.python.is_none() {
        let venv = workspace_root().join("target/pyenv/bin/python");
        o.python = venv.is_file().then_some(venv);
    }
    if o.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if o.models.is_empty() {
        bail!("--models names no model");
    }
    if o.threads.is_empty() {
        bail!("--threads names no thread count");
    }
    Ok(Some(o))
}

/// The folder of `model`: itself when it holds a model.onnx, else `<testdata>/models/<model>`.
pub fn model_dir(options: &Options, model: &str) -> PathBuf {
    if Path::new(model).join("model.onnx").is_file() {
        PathBuf::from(model)
    } else {
        options.testdata.join("models").join(model)
    }
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
        assert_eq!((o.rounds, o.warmup), (5, 1));
        assert_eq!(o.threads, [1, 2]);
        assert_eq!(o.batch_models, ["light_squeezenet"]);
        let o = parse("--models a,b --rounds=3 --threads 2 --quick --gemm 0");
        assert_eq!(o.models, ["a", "b"]);
        assert_eq!((o.rounds, o.threads.as_slice(), o.gemm_n), (3, &[2][..], 0));
        let o = parse("");
        assert_eq!(o.models.len(), testdata::ALL_MODELS.len());
        assert_eq!(o.batch_models.len(), 3);
        assert_eq!(
            parse("--out /x --quick --python=/p --rounds 3").command,
            "compare --quick --rounds 3"
        );
        assert!(parse_args(["--help".to_string()]).unwrap().is_none());
        assert!(parse_args(["--rounds".to_string(), "x".into()]).is_err());
        assert!(parse_args(["--bogus".to_string()]).is_err());
    }
}
