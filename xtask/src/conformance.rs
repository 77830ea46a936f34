//! `cargo xtask conformance [--bless]`: runs every ONNX node test case through Strata.
//!
//! Ensures the venv and `testdata/node` (stamp-keyed, so reruns skip the generation), then
//! runs `crates/strata/tests/conformance.rs` in release mode. That test compares each
//! case's outcome with `crates/strata/tests/conformance_status.txt`, fails on regressions,
//! and regenerates `docs/conformance.md`; with `--bless` it rewrites the status file.

use std::fs;

use anyhow::Result;

use crate::flags::Args;
use crate::{testdata, util};

/// Entry point of `cargo xtask conformance [--bless] [-- CARGO_TEST_ARGS...]`.
pub(crate) fn run(args: &Args) -> Result<()> {
    args.expect_flags(&["bless", "force"])?;
    let force = args.flag("force");
    let venv = testdata::ensure_python(force)?;
    let cases = testdata::ensure_node_cases(&venv, force)?;
    util::step("conformance test (release)", || {
        let mut cmd = util::cargo();
        cmd.args(["test", "--release", "-p", "strata", "--test", "conformance"])
            .args(&args.passthrough)
            .args(["--", "--nocapture"])
            .env("STRATA_CONFORMANCE_DIR", &cases)
            .env("STRATA_REQUIRE_TESTDATA", "1");
        if args.flag("bless") {
            cmd.env("STRATA_CONFORMANCE_BLESS", "1");
        }
        util::run(&mut cmd)
    })?;
    let report = util::project_root().join("docs/conformance.md");
    match summary(&fs::read_to_string(&report).unwrap_or_default()) {
        Some(line) => println!("conformance: {line} (details in docs/conformance.md)"),
        None => println!("conformance: report written to {}", report.display()),
    }
    Ok(())
}

/// The totals of the report's summary table (`| pass | fail | total | rate |`) as words.
fn summary(report: &str) -> Option<String> {
    let row = report
        .lines()
        .skip_while(|l| !l.starts_with("## Summary"))
        .filter(|l| l.starts_with('|'))
        .nth(2)?;
    let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
    match cells.as_slice() {
        [pass, fail, total, rate] => Some(format!(
            "{pass} of {total} cases pass ({rate}), {fail} fail"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn summary_reads_the_totals_row() {
        let report = "# x\n\n## Summary\n\n| Passing | Failing | Total | Pass rate |\n\
                      |--:|--:|--:|--:|\n| 3 | 1 | 4 | 75.0% |\n\n## Next\n";
        assert_eq!(
            super::summary(report).as_deref(),
            Some("3 of 4 cases pass (75.0%), 1 fail")
        );
        assert_eq!(super::summary("no table"), None);
    }
}
