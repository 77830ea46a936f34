#!/usr/bin/env python3
"""Trains a small digit classifier and exports it to ONNX for Strata's examples.

Data: scikit-learn's bundled 8x8 handwritten digits (load_digits; nothing is
downloaded), 1797 images with pixel values 0..16, split 75/25 (stratified, seeded).
Model: MLPClassifier with one hidden layer of 64 ReLU units (fixed random_state).

The ONNX graph is written with onnx.helper from the trained coefficients, using only
default-domain operators (skl2onnx would add ai.onnx.ml ops such as ZipMap):

    pixels [batch, 64] float32 (values 0..16, exactly as in the dataset)
      -> MatMul W1 -> Add b1 -> Relu -> MatMul W2 -> Add b2 -> Softmax  = probabilities [batch, 10]
                                                                -> ArgMax = label [batch] int64

The script checks that onnxruntime's labels equal sklearn's on the whole test split,
then writes digits.onnx, digits_samples/ (five labelled test images as [1, 64] float32
.npy files plus labels.json) and prints the test accuracy.

Usage: python train_digits.py [--out-dir DIR]   (default: this script's directory)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

SEED = 0
N_SAMPLES = 5


def build_onnx(clf: MLPClassifier) -> onnx.ModelProto:
    (w1, w2), (b1, b2) = clf.coefs_, clf.intercepts_
    if clf.activation != "relu" or clf.out_activation_ != "softmax":
        raise ValueError("expected a relu MLP with a softmax output")
    f32 = lambda a, n: numpy_helper.from_array(np.asarray(a, np.float32), n)  # noqa: E731
    inits = [f32(w1, "hidden.weight"), f32(b1, "hidden.bias"), f32(w2, "output.weight"), f32(b2, "output.bias")]
    nodes = [
        helper.make_node("MatMul", ["pixels", "hidden.weight"], ["hidden.matmul"], name="hidden.matmul"),
        helper.make_node("Add", ["hidden.matmul", "hidden.bias"], ["hidden.pre"], name="hidden.add"),
        helper.make_node("Relu", ["hidden.pre"], ["hidden"], name="hidden.relu"),
        helper.make_node("MatMul", ["hidden", "output.weight"], ["output.matmul"], name="output.matmul"),
        helper.make_node("Add", ["output.matmul", "output.bias"], ["logits"], name="output.add"),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=-1),
        helper.make_node("ArgMax", ["logits"], ["label"], name="argmax", axis=-1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 64])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="strata examples/models/train_digits.py",
        doc_string="MLP (64 ReLU hidden units) trained on scikit-learn's 8x8 digits; input pixels 0..16.",
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=os.path.dirname(os.path.abspath(__file__)))
    args = parser.parse_args()

    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=SEED, stratify=y
    )
    clf = MLPClassifier(hidden_layer_sizes=(64,), activation="relu", max_iter=1000, random_state=SEED)
    clf.fit(x_train, y_train)
    sk_pred = clf.predict(x_test)
    accuracy = float((sk_pred == y_test).mean())
    print(f"train {len(x_train)} / test {len(x_test)} samples; sklearn test accuracy {accuracy:.4f}")
    if accuracy <= 0.95:
        print("accuracy too low", file=sys.stderr)
        return 1

    model = build_onnx(clf)

    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    probs, labels = sess.run(["probabilities", "label"], {"pixels": x_test})
    if not np.array_equal(labels, sk_pred):
        print(f"onnx labels differ from sklearn on {(labels != sk_pred).sum()} samples", file=sys.stderr)
        return 1
    max_diff = float(np.abs(probs - clf.predict_proba(x_test)).max())
    print(f"onnxruntime labels == sklearn labels on all {len(x_test)} test samples; max |prob diff| {max_diff:.2e}")

    os.makedirs(args.out_dir, exist_ok=True)
    onnx.save(model, os.path.join(args.out_dir, "digits.onnx"))
    samples_dir = os.path.join(args.out_dir, "digits_samples")
    os.makedirs(samples_dir, exist_ok=True)
    labels_json = {}
    for k in range(N_SAMPLES):
        name = f"sample_{k}.npy"
        np.save(os.path.join(samples_dir, name), x_test[k : k + 1].astype(np.float32))
        labels_json[name] = int(y_test[k])
    with open(os.path.join(samples_dir, "labels.json"), "w") as f:
        json.dump(labels_json, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"wrote {os.path.join(args.out_dir, 'digits.onnx')} and {N_SAMPLES} samples: {labels_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
