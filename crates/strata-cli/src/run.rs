//! `strata run`: one inference, outputs written as files plus a manifest.

use crate::inputs::{gather, load_model, InputArgs};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;
use strata::{SessionOptions, Value};

/// Arguments of `strata run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The .onnx file.
    model: PathBuf,
    #[command(flatten)]
    inputs: InputArgs,
    /// Folder to write one file per output plus manifest.json.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Format of the output files.
    #[arg(long, value_parser = ["npy", "pb"], default_value = "npy")]
    output_format: String,
    /// Threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// Replaces characters outside [A-Za-z0-9._-] by '_' and keeps names unique.
pub fn sanitize(name: &str, taken: &mut HashSet<String>) -> String {
    let mut base: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if base.is_empty() || base.chars().all(|c| c == '.') {
        base = "output".into();
    }
    let mut candidate = base.clone();
    let mut n = 1;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{base}_{n}");
        n += 1;
    }
    candidate
}

fn write_outputs(dir: &Path, format: &str, outputs: &strata::Outputs) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut taken = HashSet::new();
    taken.insert("manifest".to_string());
    let mut manifest = Vec::new();
    for (name, value) in outputs.iter() {
        let Value::Tensor(tensor) = value else {
            bail!(
                "output '{name}' is a {}; only tensors can be written",
                value.describe()
            );
        };
        let file = format!("{}.{format}", sanitize(name, &mut taken));
        let path = dir.join(&file);
        if format == "pb" {
            strata::io::write_tensor_file(&path, tensor, name)?;
        } else {
            strata::io::npy::write(&path, tensor)
                .with_context(|| format!("writing output '{name}'"))?;
        }
        manifest.push(json!({
            "name": name,
            "file": file,
            "dtype": tensor.dtype().numpy_name(),
            "shape": tensor.shape(),
        }));
    }
    let path = dir.join("manifest.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json!({ "outputs": manifest }))?,
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Runs the command.
pub fn main(args: Args) -> Result<()> {
    let start = Instant::now();
    let model = load_model(&args.model)?;
    let session = model.session(SessionOptions::default().with_threads(args.threads))?;
    let load_ms = start.elapsed().as_secs_f64() * 1e3;
    let inputs = gather(&model, &args.inputs, false)?;
    let start = Instant::now();
    let outputs = session.run(inputs)?;
    let run_ms = start.elapsed().as_secs_f64() * 1e3;
    if let Some(dir) = &args.output_dir {
        write_outputs(dir, &args.output_format, &outputs)?;
    }
    println!("load {load_ms:.1} ms, first run {run_ms:.1} ms");
    for (name, value) in outputs.iter() {
        match value {
            Value::Tensor(t) => println!("  {name}: {} {:?}", t.dtype(), t.shape()),
            other => println!("  {name}: {}", other.describe()),
        }
    }
    if let Some(dir) = &args.output_dir {
        println!("outputs written to {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitized_names_are_safe_and_unique() {
        let mut taken = HashSet::new();
        assert_eq!(sanitize("gpu_0/softmax:1", &mut taken), "gpu_0_softmax_1");
        assert_eq!(sanitize("gpu_0/softmax:1", &mut taken), "gpu_0_softmax_1_1");
        assert_eq!(sanitize("..", &mut taken), "output");
        assert_eq!(sanitize("a b", &mut taken), "a_b");
    }
}
