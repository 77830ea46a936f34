//! `strata bench`: load time, first-run time and steady-state latency percentiles.

use crate::inputs::{gather, load_model, InputArgs};
use anyhow::{bail, Result};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;
use strata::SessionOptions;

/// Arguments of `strata bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The .onnx file.
    model: PathBuf,
    #[command(flatten)]
    inputs: InputArgs,
    /// Timed runs after warm-up.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// The value below which `q` (0..=1) of the sorted samples fall (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The median of sorted samples.
pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Runs the command.
pub fn main(args: Args) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let start = Instant::now();
    let model = load_model(&args.model)?;
    let session = model.session(SessionOptions::default().with_threads(args.threads))?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let inputs = gather(&model, &args.inputs, true)?;
    let start = Instant::now();
    session.run(inputs.clone())?;
    let first_run_ms = start.elapsed().as_secs_f64() * 1e3;
    for _ in 0..args.warmup {
        session.run(inputs.clone())?;
    }
    let mut samples = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let start = Instant::now();
        session.run(inputs.clone())?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    samples.sort_by(f64::total_cmp);
    let (min, med, p90) = (samples[0], median(&samples), percentile(&samples, 0.9));
    if args.json {
        println!(
            "{}",
            json!({
                "model": args.model.display().to_string(),
                "load_ms": load_ms,
                "first_run_ms": first_run_ms,
                "min_ms": min,
                "median_ms": med,
                "p90_ms": p90,
                "runs": args.runs,
                "threads": session.threads(),
            })
        );
    } else {
        println!("model      {}", args.model.display());
        println!("threads    {}", session.threads());
        println!("load       {load_ms:.2} ms");
        println!("first run  {first_run_ms:.2} ms");
        println!("runs       {}", args.runs);
        println!("min        {min:.3} ms");
        println!("median     {med:.3} ms");
        println!("p90        {p90:.3} ms");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics() {
        let s = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(median(&s), 3.0);
        assert_eq!(median(&[1.0, 2.0]), 1.5);
        assert_eq!(percentile(&s, 0.9), 10.0);
        assert_eq!(percentile(&s, 0.2), 1.0);
    }
}
