#!/usr/bin/env python3
"""Generates Strata's model test cases (run by `cargo xtask testdata`).

For each model writes `<out>/<name>/model.onnx` plus `<out>/<name>/test_data_set_0/`
with `input_J.pb` / `output_J.pb` TensorProtos named after the graph's inputs and
outputs -- the layout of the ONNX backend test cases. Reference outputs come from
onnxruntime on the CPU with graph optimisations disabled. Everything is seeded, so
reruns produce identical files.

Models:
  light_<net>   the nine "light" model-zoo networks bundled with the onnx package, with
                their ConstantOfShape placeholder weights replaced by real, seeded weights
                (see light.py)
  mobilenetv2   MobileNetV2 1.0, 224x224 (see mobilenet.py)
  bert_encoder  a 4-layer, 256-wide BERT-style encoder (see bert.py)

Usage: make_models.py --out DIR [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bert  # noqa: E402
import light  # noqa: E402
import mobilenet  # noqa: E402


def generators():
    gens = {}
    for short in light.LIGHT_MODELS:
        gens[f"light_{short}"] = lambda out, s=short: light.make_light(out, s)
    gens[mobilenet.NAME] = mobilenet.make_mobilenetv2
    gens[bert.NAME] = bert.make_bert_encoder
    return gens


def main() -> int:
    gens = generators()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory (e.g. testdata/models)")
    parser.add_argument("--only", nargs="*", choices=sorted(gens), help="generate only these models")
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    names = args.only or list(gens)
    total = time.time()
    for name in names:
        start = time.time()
        print(f"[make_models] {name}", flush=True)
        case = os.path.join(args.out, name)
        if os.path.isdir(case):
            shutil.rmtree(case)  # no stale files from an older generator
        gens[name](args.out)
        print(f"  {name}: done in {time.time() - start:.1f}s", flush=True)
    print(f"[make_models] {len(names)} models in {time.time() - total:.1f}s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
