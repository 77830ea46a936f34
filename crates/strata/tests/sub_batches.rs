//! A batch-independent model run in sub-batches, whole or in stages, gives the outputs of
//! the whole batch run at once (the digits example: MatMul+Add+Relu, MatMul+Add, Softmax and
//! ArgMax over the class axis, all on a free batch dimension).

use std::path::Path;
use strata::{Model, SessionOptions, Tensor};

fn digits() -> Model {
    Model::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/models/digits.onnx"))
        .expect("examples/models/digits.onnx")
}

/// `items` rows of 64 pixels in [0, 16).
fn pixels(items: usize) -> Tensor {
    let data: Vec<f32> = (0..items * 64)
        .map(|i| ((i * 7919 + 13) % 1601) as f32 / 100.0)
        .collect();
    Tensor::from_vec(data, &[items, 64]).expect("pixels")
}

fn run(model: &Model, sub_batch_bytes: usize, items: usize) -> (Vec<f32>, Vec<i64>, Vec<usize>) {
    let session = model
        .session(
            SessionOptions::default()
                .with_threads(2)
                .with_sub_batch_bytes(sub_batch_bytes),
        )
        .expect("session");
    if sub_batch_bytes == 1 {
        assert_eq!(
            session.sub_batch_items(),
            Some(1),
            "digits is batch-independent"
        );
    }
    let out = session.run([("pixels", pixels(items))]).expect("run");
    let probabilities = out.get("probabilities").expect("probabilities");
    let label = out.get("label").expect("label");
    (
        probabilities.to_vec::<f32>().expect("f32"),
        label.to_vec::<i64>().expect("i64"),
        probabilities.shape().to_vec(),
    )
}

#[test]
fn sub_batches_give_the_whole_batch_outputs() {
    let model = digits();
    for items in [1, 2, 5, 7] {
        let (whole, whole_labels, shape) = run(&model, 0, items);
        assert_eq!(shape, [items, 10]);
        // 1 byte: one item per sub-batch; 100 and 300 bytes: in two stages, the hidden
        // layer one item at a time (256 bytes per item), the 10 classes (40 bytes) 2 and 7
        // at a time; 3 KiB: a few items; the default: one sub-batch.
        for bytes in [1, 100, 300, 3 << 10, strata::SUB_BATCH_BYTES] {
            let (split, labels, split_shape) = run(&model, bytes, items);
            assert_eq!(split_shape, shape, "{items} items, {bytes} bytes");
            assert_eq!(labels, whole_labels, "{items} items, {bytes} bytes");
            for (a, b) in split.iter().zip(&whole) {
                assert!((a - b).abs() <= 1e-6 + 1e-5 * b.abs(), "{a} vs {b}");
            }
        }
    }
}

#[test]
fn a_run_in_stages_is_profiled_as_one_run_of_every_node() {
    let model = digits();
    let session = model
        .session(
            SessionOptions::default()
                .with_threads(1)
                .with_sub_batch_bytes(100),
        )
        .expect("session");
    // The first stage (the hidden layer) runs one item at a time.
    assert_eq!(session.sub_batch_items(), Some(1));
    let profile = strata::Profile::new(session.graph().nodes.len());
    let inputs = vec![("pixels".to_string(), strata::Value::Tensor(pixels(5)))];
    let out = session.run_profiled(inputs, &profile).expect("run");
    assert_eq!(out.get("label").expect("label").shape(), [5]);
    assert_eq!(profile.runs(), 1);
    let totals = profile.node_totals();
    assert_eq!(totals.len(), session.graph().nodes.len());
    assert!(totals.iter().all(|t| !t.is_zero()), "{totals:?}");
}
