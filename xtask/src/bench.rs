//! `cargo xtask bench`: Strata against tract on the test models.
//!
//! Ensures the test data, then runs the `compare` binary of `strata-benches` in release mode
//! (`cargo run --release -p strata-benches --bin compare`), which prints a table and writes
//! `target/bench/report.md` and `report.json`. Nothing here judges the timings: the command
//! fails only when the benchmark cannot be built or run.

use anyhow::Result;

use crate::flags::Args;
use crate::{testdata, util};

/// Entry point of `cargo xtask bench [--quick] [-- COMPARE_ARGS...]`.
pub(crate) fn run(args: &Args) -> Result<()> {
    args.expect_flags(&["quick"])?;
    run_compare(args.flag("quick"), &args.passthrough)
}

/// Ensures the test data, runs `compare` (with `--quick` when `quick`, then `extra`) against
/// it and prints where the report is.
pub(crate) fn run_compare(quick: bool, extra: &[String]) -> Result<()> {
    let testdata = testdata::ensure(false)?;
    let out = util::project_root().join("target/bench");
    let name = if quick {
        "compare --quick (Strata vs tract)"
    } else {
        "compare (Strata vs tract)"
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
        .arg(&out);
        if quick {
            cmd.arg("--quick");
        }
        util::run(cmd.args(extra))
    })?;
    println!("bench report: {}", out.join("report.md").display());
    Ok(())
}
