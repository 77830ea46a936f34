//! The `strata-server` binary: serves a model repository (or the embedded example model) over
//! the v2 inference protocol. Logs go to stderr; set RUST_LOG (e.g. `debug`) for more.

use clap::Parser;

/// Serve ONNX models over the KServe/Triton v2 inference protocol.
#[derive(Debug, Parser)]
#[command(name = "strata-server", version)]
struct Cli {
    #[command(flatten)]
    serve: strata_server::ServeArgs,
}

fn main() -> std::process::ExitCode {
    strata_server::init_logging();
    let cli = Cli::parse();
    match strata_server::run(&cli.serve) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
