"""Helpers shared by the model generators: seeding, test-case layout, onnxruntime references."""

from __future__ import annotations

import os
import zlib
from typing import Dict, List

import numpy as np
import onnx
from onnx import numpy_helper


def seed_for(name: str) -> int:
    """A stable per-model seed (independent of Python's hash randomisation)."""
    return zlib.crc32(name.encode("utf-8"))


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(seed_for(name))


def he_normal(rng: np.random.Generator, shape, fan_in: int) -> np.ndarray:
    """He-normal weights: N(0, 2/fan_in)."""
    std = np.sqrt(2.0 / max(int(fan_in), 1))
    return (rng.standard_normal(shape) * std).astype(np.float32)


def run_reference(model: onnx.ModelProto, feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
    """Runs `model` in onnxruntime on the CPU with graph optimisations disabled.

    Disabling optimisations keeps the reference faithful to the graph as written
    (no fusions that change rounding)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(
        model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in sess.get_outputs()]
    return sess.run(names, feeds)


def write_test_case(
    out_dir: str,
    name: str,
    model: onnx.ModelProto,
    inputs: Dict[str, np.ndarray],
    outputs: List[np.ndarray],
) -> str:
    """Writes `<out>/<name>/model.onnx` and `test_data_set_0/{input,output}_J.pb`.

    This is the layout of the ONNX backend test cases, so one loader serves both."""
    case = os.path.join(out_dir, name)
    data = os.path.join(case, "test_data_set_0")
    os.makedirs(data, exist_ok=True)
    onnx.save(model, os.path.join(case, "model.onnx"))
    graph_inputs = [i.name for i in model.graph.input]
    for j, input_name in enumerate(graph_inputs):
        tensor = numpy_helper.from_array(inputs[input_name], name=input_name)
        with open(os.path.join(data, f"input_{j}.pb"), "wb") as f:
            f.write(tensor.SerializeToString())
    for j, (out, value) in enumerate(zip(model.graph.output, outputs)):
        tensor = numpy_helper.from_array(np.asarray(value), name=out.name)
        with open(os.path.join(data, f"output_{j}.pb"), "wb") as f:
            f.write(tensor.SerializeToString())
    return case


def describe_outputs(name: str, model: onnx.ModelProto, outputs: List[np.ndarray]) -> None:
    """Prints the range of each output so degenerate models are easy to spot."""
    for out, value in zip(model.graph.output, outputs):
        v = np.asarray(value)
        if v.dtype.kind == "f":
            flat = v.reshape(-1).astype(np.float64)
            print(
                f"  {name}: {out.name} shape={list(v.shape)} "
                f"min={flat.min():.4g} max={flat.max():.4g} mean={flat.mean():.4g} std={flat.std():.4g}"
            )
        else:
            print(f"  {name}: {out.name} shape={list(v.shape)} dtype={v.dtype}")


def static_shape(value_info: onnx.ValueInfoProto, batch: int = 1) -> List[int]:
    """Concrete shape of a graph input; symbolic dims become `batch`."""
    dims = []
    for d in value_info.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else batch)
    return dims


def softmax_is_degenerate(v: np.ndarray) -> bool:
    """True when a probability vector is (nearly) uniform over its classes."""
    flat = np.asarray(v, dtype=np.float64).reshape(v.shape[0], -1)
    n = flat.shape[1]
    return bool(np.all(flat.max(axis=1) < 1.5 / n))
