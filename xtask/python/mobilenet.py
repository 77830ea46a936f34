"""MobileNetV2 1.0 (224x224, batch 1) built with onnx.helper, opset 17.

Architecture as in Sandler et al. 2018: a 3x3/2 stem to 32 channels, seventeen inverted
residual blocks (1x1 expand -> 3x3 depthwise via `group` -> 1x1 linear projection, each
conv followed by BatchNormalization, ReLU6 as Clip(0, 6), residual Add when stride 1 and
the channel count is unchanged), a 1x1 conv to 1280 channels, GlobalAveragePool, Flatten,
Gemm to 1000 classes and Softmax. Weights are seeded He-normal; BatchNormalization
parameters use scale U(0.8, 1.2), bias N(0, 0.1) and running statistics fitted to a
seeded calibration input (see light.calibrate_batchnorm), so activations stay O(1).
"""

from __future__ import annotations

from typing import List

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from common import (
    describe_outputs,
    he_normal,
    rng_for,
    run_reference,
    softmax_is_degenerate,
    write_test_case,
)

NAME = "mobilenetv2"

# (expansion t, output channels c, repeats n, first stride s)
INVERTED_RESIDUAL_SETTING = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


class _Builder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.nodes: List[onnx.NodeProto] = []
        self.inits: List[onnx.TensorProto] = []
        self.count = 0
        self.inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "relu6_min"))
        self.inits.append(numpy_helper.from_array(np.array(6.0, np.float32), "relu6_max"))

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def _init(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int, groups: int, relu6: bool) -> str:
        """Conv (no bias) -> BatchNormalization [-> Clip(0, 6)]."""
        n = self._name("conv")
        w = self._init(f"{n}.weight", he_normal(self.rng, [cout, cin // groups, k, k], cin // groups * k * k))
        conv_out = f"{n}.out"
        self.nodes.append(
            helper.make_node(
                "Conv", [x, w], [conv_out], name=n, kernel_shape=[k, k], strides=[stride, stride],
                pads=[k // 2] * 4, group=groups,
            )
        )
        scale = self._init(f"{n}.bn.scale", self.rng.uniform(0.8, 1.2, cout))
        bias = self._init(f"{n}.bn.bias", self.rng.standard_normal(cout) * 0.1)
        mean = self._init(f"{n}.bn.mean", self.rng.standard_normal(cout) * 0.1)
        var = self._init(f"{n}.bn.var", self.rng.uniform(0.5, 1.5, cout))
        bn_out = f"{n}.bn.out"
        self.nodes.append(
            helper.make_node(
                "BatchNormalization", [conv_out, scale, bias, mean, var], [bn_out],
                name=f"{n}.bn", epsilon=1e-5,
            )
        )
        if not relu6:
            return bn_out
        out = f"{n}.relu6"
        self.nodes.append(helper.make_node("Clip", [bn_out, "relu6_min", "relu6_max"], [out], name=out))
        return out

    def inverted_residual(self, x: str, cin: int, cout: int, stride: int, t: int) -> str:
        hidden = cin * t
        h = x
        if t != 1:
            h = self.conv_bn(h, cin, hidden, 1, 1, 1, relu6=True)
        h = self.conv_bn(h, hidden, hidden, 3, stride, hidden, relu6=True)
        h = self.conv_bn(h, hidden, cout, 1, 1, 1, relu6=False)
        if stride == 1 and cin == cout:
            out = self._name("add")
            self.nodes.append(helper.make_node("Add", [x, h], [out], name=out))
            return out
        return h


def build(rng: np.random.Generator) -> onnx.ModelProto:
    b = _Builder(rng)
    x = b.conv_bn("input", 3, 32, 3, 2, 1, relu6=True)
    cin = 32
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        for i in range(n):
            x = b.inverted_residual(x, cin, c, s if i == 0 else 1, t)
            cin = c
    x = b.conv_bn(x, cin, 1280, 1, 1, 1, relu6=True)
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
    b.nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], name="flatten", axis=1))
    b._init("classifier.weight", he_normal(rng, [1000, 1280], 1280))
    b._init("classifier.bias", rng.standard_normal(1000) * 0.01)
    b.nodes.append(
        helper.make_node(
            "Gemm", ["features", "classifier.weight", "classifier.bias"], ["logits"],
            name="classifier", transB=1,
        )
    )
    b.nodes.append(helper.make_node("Softmax", ["logits"], ["output"], name="softmax", axis=-1))
    graph = helper.make_graph(
        b.nodes,
        "mobilenetv2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1000])],
        b.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="strata-xtask make_models.py"
    )
    model.ir_version = 8
    return model


def make_mobilenetv2(out_dir: str) -> str:
    from light import calibrate_batchnorm

    model = build(rng_for(NAME))
    calibrate_batchnorm(model, NAME)
    onnx.checker.check_model(model, full_check=True)
    feeds = {"input": rng_for(NAME + "/input").standard_normal([1, 3, 224, 224]).astype(np.float32)}
    outputs = run_reference(model, feeds)
    describe_outputs(NAME, model, outputs)
    if softmax_is_degenerate(outputs[0]) or not np.all(np.isfinite(outputs[0])):
        raise RuntimeError(f"{NAME}: degenerate reference output")
    return write_test_case(out_dir, NAME, model, feeds, outputs)
