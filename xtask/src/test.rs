//! `cargo xtask test`: test data, then the whole workspace's tests.

use anyhow::Result;

use crate::flags::Args;
use crate::{testdata, util};

/// Entry point of `cargo xtask test [-- CARGO_TEST_ARGS...]`.
pub(crate) fn run(args: &Args) -> Result<()> {
    args.expect_flags(&[])?;
    run_tests(&args.passthrough)
}

/// Ensures the test data, then runs `cargo test --workspace <extra>` with
/// `STRATA_TESTDATA` (absolute path of `testdata/`) and `STRATA_REQUIRE_TESTDATA=1`,
/// which makes integration tests fail rather than skip when data is missing, and
/// `STRATA_PYENV_PYTHON` (the tritonclient venv's interpreter, for the server's client test).
pub(crate) fn run_tests(extra: &[String]) -> Result<()> {
    let testdata = testdata::ensure(false)?;
    let triton_python = testdata::ensure_triton_python(false)?;
    util::step("cargo test --workspace", || {
        util::run(
            util::cargo()
                .args(["test", "--workspace"])
                .args(extra)
                .env("STRATA_TESTDATA", &testdata)
                .env("STRATA_REQUIRE_TESTDATA", "1")
                .env("STRATA_PYENV_PYTHON", &triton_python),
        )
    })
}
