//! The `strata` command: inspect, run and benchmark ONNX models, and a demo on the embedded
//! digits classifier. Every failure prints one line naming the culprit and exits non-zero.

mod bench;
mod demo;
mod inputs;
mod inspect;
mod ops;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Strata: run ONNX models on the CPU.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a model's inputs, outputs, opsets, op histogram, parameters and FLOPs.
    Inspect(inspect::Args),
    /// Run a model once and write its outputs.
    Run(run::Args),
    /// Measure a model's latency.
    Bench(bench::Args),
    /// List the ops the CPU backend implements, with their opset ranges.
    Ops(ops::Args),
    /// Classify the embedded sample digits with the embedded model.
    Demo(demo::Args),
    /// Serve models over the KServe/Triton v2 inference protocol (same as `strata-server`).
    Serve(strata_server::ServeArgs),
}

/// The error and its causes on one line. Causes whose text the line already holds are
/// skipped: many errors print their source in their own message as well.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // Kernels never panic by design; should one do so anyway, report it as one line.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        eprintln!("error: internal error: {message}");
    }));
    let result = std::panic::catch_unwind(|| match cli.command {
        Command::Inspect(args) => inspect::main(args),
        Command::Run(args) => run::main(args),
        Command::Bench(args) => bench::main(args),
        Command::Ops(args) => ops::main(args),
        Command::Demo(args) => demo::main(args),
        Command::Serve(args) => {
            strata_server::init_logging();
            strata_server::run(&args).map_err(anyhow::Error::from)
        }
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::FAILURE,
    }
}
