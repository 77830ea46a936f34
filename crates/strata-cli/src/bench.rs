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
    /// Largest activation of one sub-batch, in bytes, when a batch-independent model runs a
    /// larger batch (0 runs every batch whole).
    #[arg(long, default_value_t = strata::SUB_BATCH_BYTES)]
    sub_batch_bytes: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// After timing, profile `--runs` more runs and print the time per op type and the
    /// slowest nodes.
    #[arg(long)]
    profile: bool,
    /// How many of the slowest nodes `--profile` lists.
    #[arg(long, default_value_t = 10)]
    top: usize,
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
    let session = model.session(
        SessionOptions::default()
            .with_threads(args.threads)
            .with_sub_batch_bytes(args.sub_batch_bytes),
    )?;
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
    if args.profile {
        print_profile(&session, &inputs, args.runs, args.top)?;
    }
    Ok(())
}

/// Runs `runs` profiled runs and prints the kernel time per op type and the `top` slowest
/// nodes with their first output's shape (milliseconds per run).
fn print_profile(
    session: &strata::Session,
    inputs: &[(String, strata::Tensor)],
    runs: usize,
    top: usize,
) -> Result<()> {
    let graph = session.graph();
    let profile = strata::Profile::new(graph.nodes.len());
    for _ in 0..runs {
        let values = inputs
            .iter()
            .map(|(name, t)| (name.clone(), strata::Value::Tensor(t.clone())))
            .collect();
        session.run_profiled(values, &profile)?;
    }
    let per_run = |d: std::time::Duration| d.as_secs_f64() * 1e3 / profile.runs().max(1) as f64;
    let totals: Vec<f64> = profile.node_totals().into_iter().map(per_run).collect();
    let all: f64 = totals.iter().sum();
    let mut by_op: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
    for (node, ms) in graph.nodes.iter().zip(&totals) {
        let entry = by_op.entry(node.op_type.as_str()).or_default();
        entry.0 += ms;
        entry.1 += 1;
    }
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    println!("profile    {runs} runs, kernel time {all:.3} ms per run");
    println!("  {:<28} {:>6} {:>10} {:>6}", "op", "nodes", "ms/run", "%");
    for (op, (ms, count)) in &ops {
        println!(
            "  {op:<28} {count:>6} {ms:>10.3} {:>6.1}",
            100.0 * ms / all.max(1e-12)
        );
    }
    let mut nodes: Vec<usize> = (0..totals.len()).collect();
    nodes.sort_by(|&a, &b| totals[b].total_cmp(&totals[a]));
    println!("  slowest nodes");
    for &n in nodes.iter().take(top) {
        let shape = graph.nodes[n]
            .outputs
            .iter()
            .flatten()
            .next()
            .and_then(|&v| graph.values[v].fact.shape.as_ref())
            .map(|dims| {
                dims.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("x")
            })
            .unwrap_or_default();
        println!(
            "  {:<40} {:<28} {:>10.3}  {shape}",
            graph.node_label(n),
            graph.nodes[n].op_type,
            totals[n]
        );
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
