//! `cargo xtask`: Strata's developer tasks, written in Rust so they run wherever
//! `cargo` does (see <https://github.com/matklad/cargo-xtask>).
//!
//! Each command lives in its own module; `main` only parses the command line and
//! dispatches. New commands (e.g. `bench`, `conformance`) get a module, a match arm
//! in [`run`] and a line in [`USAGE`].

mod bench;
mod ci;
mod conformance;
mod flags;
mod loadtest;
mod test;
mod testdata;
mod util;

use std::process::ExitCode;

use anyhow::Result;

use crate::flags::Args;

/// Help text printed by `cargo xtask help` and for unknown commands.
const USAGE: &str = "\
Usage: cargo xtask <COMMAND> [OPTIONS] [-- ARGS...]

Commands:
  testdata   Create the Python venv (target/pyenv), copy the onnx package's backend test
             data to testdata/onnx-backend/, generate testdata/models/ and write the onnx
             node test cases to testdata/node/. Idempotent: steps whose inputs are
             unchanged are skipped (stamp files).
               --force   redo every step even when its stamp is current
  test       `testdata`, then `cargo test --workspace` with STRATA_TESTDATA and
             STRATA_REQUIRE_TESTDATA=1 set; ARGS after `--` go to cargo test.
  bench      `testdata`, then `cargo run --release -p strata-benches --bin compare`:
             Strata vs onnxruntime (Python, target/pyenv) and tract on all test models,
             outputs checked against the reference first, then timed interleaved round by
             round at 1 and 2 threads; also load time and peak RSS (fresh processes),
             batch-8 scaling and a 1024^3 GEMM against OpenBLAS. Writes
             docs/performance.md and target/bench/report.md (+ report.json). ARGS after
             `--` go to compare (--models a,b --rounds R --threads 1,2; see `-- --help`).
               --quick   squeezenet, mobilenetv2 and bert_encoder only, 5 rounds;
                         prints the report and writes target/bench/report.md only
  conformance
             Write the onnx node test cases to testdata/node/ (stamped), run them all
             (`cargo test --release -p strata --test conformance`), compare with
             crates/strata/tests/conformance_status.txt (regressions fail) and
             regenerate docs/conformance.md. ARGS after `--` go to cargo test.
               --bless   rewrite the status file with the current results
               --force   regenerate the cases even when their stamp is current
  loadtest   Build the release strata-server and load-test it on SqueezeNet (batch dim
             freed) with batching on and off: 64 keep-alive clients for 20 s each, then
             SIGTERM (must exit 0). Prints throughput, p50/p99 latency, mean batch size and
             errors (fails on any error or lost request); writes target/loadtest/report.md.
             ARGS after `--`: --clients N --duration S.
  ci         cargo fmt --check, cargo clippy -D warnings, cargo deny (licenses, bans,
             sources), `test`, then `bench --quick` (prints the table; asserts nothing
             about time). ARGS after `--` go to cargo test.
  help       Print this message.

Environment:
  STRATA_PYTHON   interpreter used to create the venv (default: python3)
";

fn main() -> ExitCode {
    match flags::parse(std::env::args().skip(1)).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The cause chain, without anyhow's backtrace (noise for a task runner).
            eprintln!("xtask error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs the command selected by `args`.
fn run(args: Args) -> Result<()> {
    match args.command.as_deref() {
        Some("testdata") => testdata::run(&args),
        Some("test") => test::run(&args),
        Some("ci") => ci::run(&args),
        Some("bench") => bench::run(&args),
        Some("conformance") => conformance::run(&args),
        Some("loadtest") => loadtest::run(&args),
        Some("help") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => {
            eprint!("{USAGE}");
            anyhow::bail!("unknown command `{other}`")
        }
    }
}
