//! `cargo xtask ci`: every check CI runs, cheapest first, stopping at the first failure;
//! last, `bench --quick` prints the Strata vs onnxruntime and tract report (informational
//! only).

use std::time::Instant;

use anyhow::{Context, Result};

use crate::flags::Args;
use crate::{bench, test, util};

/// The cargo-deny checks we run. `advisories` is left out: it fetches the RustSec
/// advisory database from GitHub, which the CI network cannot reach.
const DENY_CHECKS: &[&str] = &["licenses", "bans", "sources"];

/// Entry point of `cargo xtask ci [-- CARGO_TEST_ARGS...]`.
pub(crate) fn run(args: &Args) -> Result<()> {
    args.expect_flags(&[])?;
    let start = Instant::now();
    util::step("cargo fmt --check", || {
        util::run(util::cargo().args(["fmt", "--all", "--", "--check"]))
            .context("code is not rustfmt-formatted; run `cargo fmt --all`")
    })?;
    util::step("cargo clippy", || {
        util::run(util::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    util::step("cargo deny", || {
        ensure_cargo_deny()?;
        println!(
            "note: skipping `cargo deny check advisories`: the advisory database is fetched \
             from GitHub, which is not reachable from CI"
        );
        util::run(util::cargo().args(["deny", "check"]).args(DENY_CHECKS))
    })?;
    test::run_tests(&args.passthrough)?;
    // Only prints the comparison table: timings are never asserted on.
    bench::run_compare(true, &[])?;
    println!(
        "ci: all checks passed in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Installs cargo-deny with `cargo install --locked` unless `cargo deny` already runs.
fn ensure_cargo_deny() -> Result<()> {
    if util::succeeds(util::cargo().args(["deny", "--version"])) {
        return Ok(());
    }
    println!("cargo-deny not found; installing it (takes a few minutes)");
    util::run(util::cargo().args(["install", "cargo-deny", "--locked"]))
        .context("installing cargo-deny")
}
