#!/usr/bin/env python3
"""Sanity-checks test cases in the ONNX backend-test layout (e.g. testdata/models).

For every `<dir>/<case>/model.onnx`, loads `test_data_set_*/input_J.pb`, checks the
tensor names match the graph's inputs/outputs, reruns the model in onnxruntime with
*all* graph optimisations enabled (an independent path from the reference run) and
reports the largest deviation from `output_J.pb`.

Usage: check_models.py DIR [--rtol 1e-3] [--atol 1e-4]
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def load_pb(path: str) -> onnx.TensorProto:
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir")
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args()

    failures = 0
    for model_path in sorted(glob.glob(os.path.join(args.dir, "*", "model.onnx"))):
        case = os.path.dirname(model_path)
        model = onnx.load(model_path)
        sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        for data_dir in sorted(glob.glob(os.path.join(case, "test_data_set_*"))):
            inputs = [load_pb(p) for p in sorted(glob.glob(os.path.join(data_dir, "input_*.pb")))]
            expected = [load_pb(p) for p in sorted(glob.glob(os.path.join(data_dir, "output_*.pb")))]
            names_ok = [t.name for t in inputs] == [i.name for i in model.graph.input] and [
                t.name for t in expected
            ] == [o.name for o in model.graph.output]
            got = sess.run(None, {t.name: numpy_helper.to_array(t) for t in inputs})
            worst = 0.0
            ok = names_ok
            for g, e in zip(got, expected):
                e = numpy_helper.to_array(e)
                ok &= g.shape == e.shape and bool(np.allclose(g, e, rtol=args.rtol, atol=args.atol))
                if e.dtype.kind == "f":
                    worst = max(worst, float(np.abs(g.astype(np.float64) - e).max()))
            print(f"{'ok  ' if ok else 'FAIL'} {os.path.basename(case)}/{os.path.basename(data_dir)}: "
                  f"max |diff| {worst:.3g}{'' if names_ok else ' (tensor names do not match the graph)'}")
            failures += not ok
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
