"""Materialises the "light" ONNX model-zoo models bundled with the onnx package.

The bundled light_*.onnx files keep the real graph structure of the model-zoo
networks but compute (most of) their weights with `ConstantOfShape(shape, 0.02)`,
which makes every activation collapse to a constant and every softmax uniform.
Here each such weight becomes a real initializer drawn from a seeded, scale-aware
distribution so activations stay O(1) and the outputs are informative:

* Conv / Gemm weights: He-normal, std = sqrt(2 / fan_in), fan_in = prod(shape[1:]) for
  convolutions, the reduced dimension for Gemm (after any Reshape of the weight);
* Conv / Gemm biases: N(0, 1) * 0.01;
* BatchNormalization: scale U(0.8, 1.2), bias N(0, 0.1), mean N(0, 0.1), var U(0.5, 1.5);
* per-channel affine "scale layers" (Unsqueeze -> Mul / Add): Mul U(0.8, 1.2), Add N(0, 0.1).

The few float parameters the light files store verbatim (fragments of the trained
weights, e.g. a first-layer bias of mean -1.2) are redrawn with the same scheme, since
next to random weights they silence whole layers.

In networks with residual Sum/Add joins (ResNet-50, ShuffleNet) fixed running statistics
let the variance double at every join (ResNet-50's logits reach ~4e4 and its softmax
becomes one-hot), so there the BatchNormalization running mean/var are fitted to a seeded
calibration input, layer by layer (see `calibrate_batchnorm`).

The ConstantOfShape nodes and their __SHAPE initializers are removed, initializers are
dropped from graph.input (IR version raised to 4 where needed) and onnx.checker runs.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Dict, List, Tuple

import numpy as np
import onnx
from onnx import helper, numpy_helper

from common import (
    describe_outputs,
    he_normal,
    rng_for,
    run_reference,
    softmax_is_degenerate,
    static_shape,
    write_test_case,
)

LIGHT_MODELS = [
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
]


def light_dir() -> str:
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def _consumers(graph: onnx.GraphProto) -> Dict[str, List[Tuple[onnx.NodeProto, int]]]:
    uses: Dict[str, List[Tuple[onnx.NodeProto, int]]] = defaultdict(list)
    for node in graph.node:
        for i, name in enumerate(node.input):
            uses[name].append((node, i))
    return uses


def _role(value: str, uses) -> Tuple[str, onnx.NodeProto | None]:
    """Classifies what a ConstantOfShape output feeds, following Reshape/Unsqueeze."""
    for node, idx in uses.get(value, []):
        op = node.op_type
        if op in ("Reshape", "Unsqueeze", "Squeeze", "Flatten") and idx == 0:
            role, n = _role(node.output[0], uses)
            if role != "unknown":
                return role, n
        elif op in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            if idx == 1:
                return "weight", node
            if idx == 2:
                return "bias", node
        elif op == "BatchNormalization" and 1 <= idx <= 4:
            return ["bn_scale", "bn_bias", "bn_mean", "bn_var"][idx - 1], node
        elif op == "Mul":
            return "affine_scale", node
        elif op in ("Add", "Sum"):
            return "affine_bias", node
    return "unknown", None


def _fan_in(shape: List[int], node: onnx.NodeProto) -> int:
    """Fan-in of a weight of `shape` consumed by `node` (maybe through a Reshape:
    inception_v1 stores its classifier as [1, 1, 1000, 1024])."""
    if node.op_type == "Gemm" and len(shape) >= 2:
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return shape[-1] if trans_b else shape[-2]
    if node.op_type == "MatMul" and len(shape) >= 2:
        return shape[-2]
    return int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])


def _draw(role: str, shape: List[int], node, rng: np.random.Generator) -> np.ndarray:
    if role == "weight":
        return he_normal(rng, shape, _fan_in(shape, node))
    if role == "bias":
        return (rng.standard_normal(shape) * 0.01).astype(np.float32)
    if role in ("bn_scale", "affine_scale"):
        return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    if role in ("bn_bias", "bn_mean", "affine_bias"):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)
    if role == "bn_var":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    raise ValueError(f"cannot materialise a weight with role {role}")


def _bn_depths(graph: onnx.GraphProto) -> Dict[str, int]:
    """For each BatchNormalization node (by output name), the largest number of
    BatchNormalization nodes on any path from the graph inputs to its input."""
    depth_of_value: Dict[str, int] = defaultdict(int)
    bn_depth: Dict[str, int] = {}
    for node in graph.node:  # ONNX graphs are topologically sorted
        d = max((depth_of_value[i] for i in node.input if i), default=0)
        if node.op_type == "BatchNormalization":
            bn_depth[node.output[0]] = d
            d += 1
        for o in node.output:
            depth_of_value[o] = d
    return bn_depth


def calibrate_batchnorm(model: onnx.ModelProto, name: str) -> None:
    """Re-fits BatchNormalization running statistics to the activations they see.

    With random weights, fixed running statistics do not normalise anything, and in
    residual networks the variance doubles at every residual Sum (ResNet-50's logits
    reach ~4e4 and its softmax becomes one-hot). Here the statistics are fitted layer by
    layer, in order of BatchNormalization depth, on a seeded calibration input (not the
    test input): mean = observed mean + N(0, 0.1) * observed std, var = observed var *
    U(0.5, 1.5). Scale and bias keep their drawn values, so every BatchNormalization
    output is O(1) while still not being exactly normalised.
    """
    import onnxruntime as ort

    graph = model.graph
    rng = rng_for(name + "/calibration")
    inits = {i.name: i for i in graph.initializer}
    bns = [n for n in graph.node if n.op_type == "BatchNormalization"]
    depths = _bn_depths(graph)

    # Expose the running statistics as graph inputs and every BN input as an output,
    # so one session serves all passes.
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    pg = probe.graph
    stat_names = set()
    for bn in bns:
        stat_names.update([bn.input[3], bn.input[4]])
    kept = [i for i in pg.initializer if i.name not in stat_names]
    del pg.initializer[:]
    pg.initializer.extend(kept)
    stats = {n: numpy_helper.to_array(inits[n]).copy() for n in sorted(stat_names)}
    for n, v in stats.items():
        pg.input.append(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(v.shape)))
    bn_inputs = sorted({bn.input[0] for bn in bns})
    for n in bn_inputs:
        pg.output.append(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    data = {
        i.name: rng.standard_normal(static_shape(i)).astype(np.float32)
        for i in graph.input
    }
    for depth in sorted(set(depths.values())):
        values = dict(zip(bn_inputs, sess.run(bn_inputs, {**data, **stats})))
        for bn in bns:
            if depths[bn.output[0]] != depth:
                continue
            x = values[bn.input[0]].astype(np.float64)
            axes = (0,) + tuple(range(2, x.ndim))
            mu, var = x.mean(axis=axes), x.var(axis=axes)
            sd = np.sqrt(var + 1e-6)
            shape = stats[bn.input[3]].shape
            stats[bn.input[3]] = (mu + rng.standard_normal(shape) * 0.1 * sd).astype(np.float32)
            stats[bn.input[4]] = (var * rng.uniform(0.5, 1.5, shape) + 1e-5).astype(np.float32)
    for n, v in stats.items():
        inits[n].CopyFrom(numpy_helper.from_array(v, name=n))
    print(f"  {name}: calibrated {len(bns)} BatchNormalization layers in {len(set(depths.values()))} passes")


def _has_residual_sum(graph: onnx.GraphProto) -> bool:
    """True when some Add/Sum joins two activations (not an activation and a constant)."""
    constant = {i.name for i in graph.initializer}
    for node in graph.node:
        if all(i in constant for i in node.input if i):
            constant.update(node.output)
    return any(
        node.op_type in ("Sum", "Add") and sum(i not in constant for i in node.input) >= 2
        for node in graph.node
    )


def materialize(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """Returns a copy of `model` with real, seeded weights.

    Every ConstantOfShape weight becomes an initializer. The few float parameters the
    light models still store verbatim (fragments of the trained weights) are redrawn too,
    so weights, biases and normalisation parameters come from one consistent scheme
    (a trained bias of -1.2 next to random weights silences whole layers)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    rng = rng_for(name)
    inits = {i.name: i for i in graph.initializer}
    uses = _consumers(graph)

    counts: Dict[str, int] = defaultdict(int)
    drawn: Dict[str, np.ndarray] = {}
    keep_nodes: List[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in inits:
            keep_nodes.append(node)
            continue
        shape = [int(d) for d in numpy_helper.to_array(inits[node.input[0]]).reshape(-1)]
        out = node.output[0]
        role, consumer = _role(out, uses)
        if role == "unknown":
            raise RuntimeError(f"{name}: don't know what {out} (shape {shape}) is used for")
        counts[role] += 1
        drawn[out] = _draw(role, shape, consumer, rng)
    redrawn = 0
    for init in list(graph.initializer):
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) == 0:
            continue
        role, consumer = _role(init.name, uses)
        if role == "unknown":
            continue
        redrawn += 1
        drawn[init.name] = _draw(role, list(init.dims), consumer, rng)

    del graph.node[:]
    graph.node.extend(keep_nodes)
    replaced = [i for i in graph.initializer if i.name not in drawn]
    del graph.initializer[:]
    graph.initializer.extend(replaced)
    graph.initializer.extend(numpy_helper.from_array(v, name=k) for k, v in drawn.items())

    # Drop initializers nothing reads any more (the __SHAPE vectors, unused blobs).
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)

    # Initializers are not graph inputs (IR >= 4 allows that); keep only real inputs.
    init_names = {i.name for i in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in init_names and i.name in used]
    del graph.input[:]
    graph.input.extend(real_inputs)
    if model.ir_version < 4:
        model.ir_version = 4

    # Stale value_info for removed tensors would only confuse readers.
    del graph.value_info[:]
    model.producer_name = "strata-xtask make_models.py (materialized light model)"
    print(
        f"  {name}: materialized "
        + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        + f"; redrew {redrawn} stored float parameters"
    )
    if _has_residual_sum(graph) and any(n.op_type == "BatchNormalization" for n in graph.node):
        calibrate_batchnorm(model, name)
    onnx.checker.check_model(model, full_check=True)
    return model


def make_light(out_dir: str, short: str) -> str:
    name = f"light_{short}"
    src = onnx.load(os.path.join(light_dir(), f"{name}.onnx"))
    model = materialize(src, name)
    rng = rng_for(name + "/input")
    feeds = {
        i.name: rng.standard_normal(static_shape(i)).astype(np.float32) for i in model.graph.input
    }
    outputs = run_reference(model, feeds)
    describe_outputs(name, model, outputs)
    out0 = np.asarray(outputs[0])
    if not np.all(np.isfinite(out0)):
        raise RuntimeError(f"{name}: non-finite reference output")
    last = model.graph.node[-1]
    if last.op_type == "Softmax" and softmax_is_degenerate(out0):
        raise RuntimeError(f"{name}: softmax output is uniform; weights are degenerate")
    if float(out0.std()) == 0.0:
        raise RuntimeError(f"{name}: constant reference output")
    return write_test_case(out_dir, name, model, feeds, outputs)
