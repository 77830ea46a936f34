//! `strata ops`: the operator coverage of the CPU backend.

use anyhow::Result;
use serde_json::json;
use strata::OpRegistry;

/// Arguments of `strata ops`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn range(since: i64, until: i64) -> String {
    if until == i64::MAX {
        format!("{since}+")
    } else {
        format!("{since}-{until}")
    }
}

/// Runs the command.
pub fn main(args: Args) -> Result<()> {
    let registry = OpRegistry::with_cpu_kernels();
    let rows: Vec<(String, Vec<String>)> = registry
        .iter()
        .map(|(domain, op, impls)| {
            let name = if domain.is_empty() {
                op.to_string()
            } else {
                format!("{domain}.{op}")
            };
            (
                name,
                impls.iter().map(|r| range(r.since, r.until)).collect(),
            )
        })
        .collect();
    if args.json {
        let map: serde_json::Map<String, serde_json::Value> =
            rows.into_iter().map(|(n, r)| (n, json!(r))).collect();
        println!("{}", serde_json::to_string_pretty(&map)?);
    } else {
        for (name, ranges) in &rows {
            println!("{name:<32} opsets {}", ranges.join(", "));
        }
        println!("{} ops", rows.len());
    }
    Ok(())
}
