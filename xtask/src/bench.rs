//! `cargo xtask bench`: Strata against onnxruntime and tract on the test models.
//!
//! Ensures the test data and the Python venv (onnxruntime, numpy), then runs the `compare`
//! binary of `strata-benches` in release mode
//! (`cargo run --release -p strata-benches --bin compare`) with the venv's interpreter, which
//! runs onnxruntime through `xtask/python/bench/ort_worker.py`. It prints the report and
//! writes `target/bench/report.md` and `report.json`; the full run also writes
//! `docs/performance.md`. Nothing here judges the timings: the command fails only when the
//! benchmark cannot be built or run.

use anyhow::Result;

use crate::flags::Args;
use crate::{testdata, util};

/// Where the full run writes its report, relative to the project root.
const DOC: &str = "docs/performance.md";

/// Entry point of `cargo xtask bench [--quick] [-- COMPARE_ARGS...]`.
pub(crate) fn run(args: &Args) -> Result<()> {
    args.expect_flags(&["quick"])?;
    run_compare(args.flag("quick"), &args.passthrough)
}

/// Ensures the test data, runs `compare` (with `--quick` when `quick`, else writing
/// [`DOC`], then `extra`) against it and prints where the report is.
pub(crate) fn run_compare(quick: bool, extra: &[String]) -> Result<()> {
    let testdata = testdata::ensure(false)?;
    let root = util::project_root();
    let out = root.join("target/bench");
    let name = if quick {
        "compare --quick (Strata vs onnxruntime and tract)"
    } else {
        "compare (Strata vs onnxruntime and tract)"
    };
    util::step(name, || {
        let mut cmd = util::cargo();
        cmd.args([
            "run",
            "--release",
            "-p",
            "strata-benches",
            "--bin",
            "compare",
            "--",
        ])
        .arg("--testdata")
        .arg(&testdata)
        .arg("--out")
        .arg(&out)
        .arg("--python")
        .arg(testdata::pyenv_python());
        if quick {
            cmd.arg("--quick");
        } else {
            cmd.arg("--doc").arg(root.join(DOC));
        }
        util::run(cmd.args(extra))
    })?;
    println!("bench report: {}", out.join("report.md").display());
    if !quick {
        println!("bench report: {}", root.join(DOC).display());
    }
    Ok(())
}
