#!/usr/bin/env python3
"""Writes every ONNX node test case of the installed onnx package (run by `cargo xtask
conformance` and `cargo xtask testdata`).

The cases come from the package's own generators,
`onnx.backend.test.case.node.collect_testcases()`: one per `expect(...)` call in
`onnx/backend/test/case/node/*.py`, plus the `_expanded` variants of function ops. Each is
written in the layout of the ONNX backend test data:

  <out>/<name>/model.onnx
  <out>/<name>/test_data_set_N/input_J.pb, output_J.pb

Every `.pb` is named after the graph input or output it feeds and holds the value kind that
the graph declares: a TensorProto (numpy arrays of strings or objects become STRING
tensors), a SequenceProto (numpy_helper.from_list), an OptionalProto
(numpy_helper.from_optional) or a MapProto (numpy_helper.from_dict). The generators seed
numpy before each export, so reruns produce identical files.

Usage: node_cases.py --out DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import warnings
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper


def tensor_proto(value: Any, name: str) -> onnx.TensorProto:
    """A TensorProto named `name` from an array, a scalar or an existing TensorProto."""
    if isinstance(value, onnx.TensorProto):
        proto = onnx.TensorProto()
        proto.CopyFrom(value)
        proto.name = name
        return proto
    array = np.asarray(value)
    if array.dtype.kind == "S":  # bytes: from_array only takes str/object for strings
        array = array.astype(object)
    return numpy_helper.from_array(array, name=name)


def optional_elem_type(type_proto: onnx.TypeProto) -> int | None:
    """The OptionalProto element type the graph declares, so empty optionals are typed."""
    elem = type_proto.optional_type.elem_type
    if elem.HasField("tensor_type"):
        return onnx.OptionalProto.TENSOR
    if elem.HasField("sequence_type"):
        return onnx.OptionalProto.SEQUENCE
    if elem.HasField("map_type"):
        return onnx.OptionalProto.MAP
    return None


def value_proto(value: Any, info: onnx.ValueInfoProto):
    """The proto of the kind `info` declares, named after it."""
    kind = info.type.WhichOneof("value")
    if kind == "map_type":
        return numpy_helper.from_dict(value, info.name)
    if kind == "sequence_type":
        return numpy_helper.from_list(list(value), info.name)
    if kind == "optional_type":
        return numpy_helper.from_optional(value, info.name, optional_elem_type(info.type))
    return tensor_proto(value, info.name)


def write_case(out: str, case) -> int:
    """Writes one test case; returns the number of files written."""
    case_dir = os.path.join(out, case.name)
    if os.path.isdir(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)
    with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
        f.write(case.model.SerializeToString())
    files = 1
    graph = case.model.graph
    for n, (inputs, outputs) in enumerate(case.data_sets):
        data_dir = os.path.join(case_dir, f"test_data_set_{n}")
        os.makedirs(data_dir)
        for prefix, values, infos in (("input", inputs, graph.input), ("output", outputs, graph.output)):
            for j, (value, info) in enumerate(zip(values, infos)):
                with open(os.path.join(data_dir, f"{prefix}_{j}.pb"), "wb") as f:
                    f.write(value_proto(value, info).SerializeToString())
                files += 1
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory (e.g. testdata/node)")
    args = parser.parse_args()

    start = time.time()
    # The generators compute some expected values by overflowing casts and dividing by
    # zero on purpose; numpy's warnings about that are noise here.
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    from onnx.backend.test.case.node import collect_testcases

    cases = collect_testcases()
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        print("node_cases: duplicate case names", file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    files = sum(write_case(args.out, case) for case in sorted(cases, key=lambda c: c.name))
    print(
        f"[node_cases] onnx {onnx.__version__}: {len(cases)} cases, {files} files "
        f"in {time.time() - start:.1f}s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
