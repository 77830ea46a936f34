//! `strata inspect`: what a model contains.

use crate::inputs::{dim_bindings, load_model};
use anyhow::Result;
use serde_json::{json, Value as Json};
use std::path::PathBuf;
use strata::{IoInfo, SessionOptions};

/// Arguments of `strata inspect`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The .onnx file.
    model: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Show the graph after optimization passes.
    #[arg(long)]
    optimized: bool,
    /// Size of a symbolic dimension for the FLOP estimate, as SYMBOL=N (default 1).
    #[arg(long = "dim", value_name = "SYMBOL=N")]
    dims: Vec<String>,
}

fn io_json(list: &[IoInfo]) -> Json {
    Json::Array(
        list.iter()
            .map(|i| {
                json!({
                    "name": i.name,
                    "kind": format!("{:?}", i.kind).to_lowercase(),
                    "dtype": i.dtype.map(|d| d.numpy_name()),
                    "dims": i.dims.as_ref().map(|d| d.iter().map(|d| match d {
                        strata::Dim::Known(n) => json!(n),
                        strata::Dim::Symbol(s) => json!(s),
                    }).collect::<Vec<_>>()),
                })
            })
            .collect(),
    )
}

fn histogram(graph: &strata::Graph) -> std::collections::BTreeMap<String, usize> {
    let mut h = std::collections::BTreeMap::new();
    for n in &graph.nodes {
        *h.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    h
}

/// Runs the command.
pub fn main(args: Args) -> Result<()> {
    let model = load_model(&args.model)?;
    let bindings = dim_bindings(&args.dims)?;
    let meta = model.metadata();
    let graph = model.graph();
    let unsupported: Vec<String> = model
        .unsupported_ops()
        .iter()
        .map(ToString::to_string)
        .collect();
    let flops = if unsupported.is_empty() {
        model.estimate_flops(&bindings).ok()
    } else {
        None
    };
    let optimized = if args.optimized {
        let session = model.session(SessionOptions::default().with_threads(1))?;
        Some((session.graph().clone(), session.passes_applied().to_vec()))
    } else {
        None
    };

    if args.json {
        let mut out = json!({
            "model": args.model.display().to_string(),
            "ir_version": meta.ir_version,
            "opsets": meta.opsets,
            "producer": { "name": meta.producer_name, "version": meta.producer_version },
            "domain": meta.domain,
            "model_version": meta.model_version,
            "doc_string": meta.doc_string,
            "graph_name": meta.graph_name,
            "metadata_props": meta.metadata_props.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "inputs": io_json(&model.inputs()),
            "outputs": io_json(&model.outputs()),
            "nodes": graph.nodes.len(),
            "op_histogram": model.op_histogram(),
            "parameters": graph.parameter_count(),
            "parameter_bytes": graph.parameter_bytes(),
            "flops": flops,
            "unsupported": unsupported,
        });
        if let Some((g, passes)) = &optimized {
            out["optimized"] = json!({
                "nodes": g.nodes.len(),
                "op_histogram": histogram(g),
                "passes": passes,
                "graph": g.nodes.iter().enumerate().map(|(i, n)| json!({
                    "name": g.node_label(i),
                    "op": n.op_type,
                    "inputs": n.inputs.iter().map(|v| v.map(|v| g.values[v].name.clone())).collect::<Vec<_>>(),
                    "outputs": n.outputs.iter().map(|v| v.map(|v| g.values[v].name.clone())).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
            });
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }

    println!("model       {}", args.model.display());
    println!("ir version  {}", meta.ir_version);
    let opsets: Vec<String> = meta
        .opsets
        .iter()
        .map(|(d, v)| format!("{}:{v}", if d.is_empty() { "ai.onnx" } else { d }))
        .collect();
    println!("opsets      {}", opsets.join(", "));
    if !meta.producer_name.is_empty() {
        println!(
            "producer    {} {}",
            meta.producer_name, meta.producer_version
        );
    }
    for (k, v) in &meta.metadata_props {
        println!("metadata    {k} = {v}");
    }
    println!("inputs");
    for i in model.inputs() {
        println!(
            "  {:<24} {:<8} {}",
            i.name,
            i.dtype.map_or("?", |d| d.numpy_name()),
            i.dims_string()
        );
    }
    println!("outputs");
    for o in model.outputs() {
        println!(
            "  {:<24} {:<8} {}",
            o.name,
            o.dtype.map_or("?", |d| d.numpy_name()),
            o.dims_string()
        );
    }
    println!("nodes       {}", graph.nodes.len());
    println!(
        "parameters  {} ({:.2} MB)",
        graph.parameter_count(),
        graph.parameter_bytes() as f64 / 1e6
    );
    match flops {
        Some(f) => println!("flops       {:.3} GFLOP per run", f as f64 / 1e9),
        None => println!("flops       unknown"),
    }
    println!("op histogram");
    for (op, n) in model.op_histogram() {
        println!("  {op:<24} {n}");
    }
    for u in &unsupported {
        println!("unsupported {u}");
    }
    if let Some((g, passes)) = optimized {
        println!(
            "optimized graph ({} nodes; passes: {})",
            g.nodes.len(),
            passes.join(", ")
        );
        for (i, n) in g.nodes.iter().enumerate() {
            let names = |list: &[Option<usize>]| {
                list.iter()
                    .map(|v| v.map_or(String::new(), |v| g.values[v].name.clone()))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "  {}: {}({}) -> {}",
                g.node_label(i),
                n.op_type,
                names(&n.inputs),
                names(&n.outputs)
            );
        }
    }
    Ok(())
}
