//! `strata demo`: the embedded default model (a digits classifier trained by
//! examples/models/train_digits.py) on its embedded labelled samples. Needs no files.

use anyhow::{anyhow, Result};
use std::time::Instant;
use strata::{Model, SessionOptions};

const MODEL: &[u8] = include_bytes!("../../../examples/models/digits.onnx");
const SAMPLES: [(&str, &[u8]); 5] = [
    (
        "sample_0.npy",
        include_bytes!("../../../examples/models/digits_samples/sample_0.npy"),
    ),
    (
        "sample_1.npy",
        include_bytes!("../../../examples/models/digits_samples/sample_1.npy"),
    ),
    (
        "sample_2.npy",
        include_bytes!("../../../examples/models/digits_samples/sample_2.npy"),
    ),
    (
        "sample_3.npy",
        include_bytes!("../../../examples/models/digits_samples/sample_3.npy"),
    ),
    (
        "sample_4.npy",
        include_bytes!("../../../examples/models/digits_samples/sample_4.npy"),
    ),
];
const LABELS: &str = include_str!("../../../examples/models/digits_samples/labels.json");

/// Arguments of `strata demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// Draws an 8x8 digit (values 0..16) as text.
fn ascii_art(pixels: &[f32]) -> Vec<String> {
    pixels
        .chunks(8)
        .map(|row| {
            row.iter()
                .map(|&p| [' ', '.', ':', '#'][((p / 16.0) * 3.0).round().clamp(0.0, 3.0) as usize])
                .collect()
        })
        .collect()
}

/// Runs the command.
pub fn main(args: Args) -> Result<()> {
    let labels: serde_json::Value = serde_json::from_str(LABELS)?;
    let start = Instant::now();
    let model = Model::from_bytes(MODEL)?;
    let session = model.session(SessionOptions::default().with_threads(args.threads))?;
    println!(
        "digits classifier (8x8 scikit-learn digits, MLP 64-64-10) loaded in {:.2} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    let mut correct = 0;
    for (file, bytes) in SAMPLES {
        let pixels = strata::io::npy::from_bytes(bytes)?;
        let start = Instant::now();
        let outputs = session.run([("pixels", pixels.clone())])?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let label = outputs
            .get("label")
            .ok_or_else(|| anyhow!("model has no 'label' output"))?
            .to_vec::<i64>()?[0];
        let probs = outputs
            .get("probabilities")
            .ok_or_else(|| anyhow!("model has no 'probabilities' output"))?
            .to_vec::<f32>()?;
        let truth = labels[file]
            .as_i64()
            .ok_or_else(|| anyhow!("no label for {file}"))?;
        correct += usize::from(label == truth);
        let art = ascii_art(&pixels.to_vec::<f32>()?);
        println!();
        for (i, line) in art.iter().enumerate() {
            match i {
                2 => println!(
                    "  |{line}|   predicted {label} (p = {:.3}), true {truth} {}",
                    probs[label as usize],
                    if label == truth { "ok" } else { "WRONG" }
                ),
                3 => println!("  |{line}|   {ms:.3} ms"),
                _ => println!("  |{line}|"),
            }
        }
    }
    println!("\n{correct}/{} samples classified correctly", SAMPLES.len());
    Ok(())
}
