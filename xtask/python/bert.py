"""A small BERT-style encoder built with onnx.helper, opset 17.

input_ids int64 [batch, 128] -> word-embedding Gather (vocab 1000, hidden 256) +
position embeddings -> LayerNormalization -> 4 encoder layers -> last_hidden_state
float32 [batch, 128, 256]. Each layer: Q/K/V MatMul+Add, Reshape/Transpose to 4 heads of
64, MatMul QK^T, Div by sqrt(64), Softmax, MatMul V, Transpose/Reshape back, output
MatMul+Add, residual Add, LayerNormalization, FFN MatMul(256->1024)+Add, GELU written
as x * 0.5 * (1 + Erf(x / sqrt(2))), MatMul(1024->256)+Add, residual Add,
LayerNormalization. Weights are N(0, 1) * 0.02, LayerNorm gamma 1 and beta 0.
"""

from __future__ import annotations

import math
from typing import List

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from common import describe_outputs, rng_for, run_reference, write_test_case

NAME = "bert_encoder"
VOCAB = 1000
HIDDEN = 256
HEADS = 4
HEAD_DIM = HIDDEN // HEADS
FFN = 1024
LAYERS = 4
SEQ = 128


def build(rng: np.random.Generator) -> onnx.ModelProto:
    nodes: List[onnx.NodeProto] = []
    inits: List[onnx.TensorProto] = []

    def init(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value, name))
        return name

    def normal(name: str, shape) -> str:
        return init(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    def node(op: str, inputs, output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, list(inputs), [output], name=output, **attrs))
        return output

    def layer_norm(x: str, prefix: str) -> str:
        g = init(f"{prefix}.gamma", np.ones(HIDDEN, np.float32))
        b = init(f"{prefix}.beta", np.zeros(HIDDEN, np.float32))
        return node("LayerNormalization", [x, g, b], f"{prefix}.out", axis=-1, epsilon=1e-12)

    def linear(x: str, prefix: str, n_in: int, n_out: int) -> str:
        w = normal(f"{prefix}.weight", [n_in, n_out])
        b = normal(f"{prefix}.bias", [n_out])
        mm = node("MatMul", [x, w], f"{prefix}.matmul")
        return node("Add", [mm, b], f"{prefix}.out")

    init("heads_shape", np.array([0, 0, HEADS, HEAD_DIM], np.int64))
    init("hidden_shape", np.array([0, 0, HIDDEN], np.int64))
    init("sqrt_head_dim", np.array(math.sqrt(HEAD_DIM), np.float32))
    init("sqrt2", np.array(math.sqrt(2.0), np.float32))
    init("half", np.array(0.5, np.float32))
    init("one", np.array(1.0, np.float32))

    words = node("Gather", [normal("embeddings.word", [VOCAB, HIDDEN]), "input_ids"], "embeddings.words", axis=0)
    emb = node("Add", [words, normal("embeddings.position", [SEQ, HIDDEN])], "embeddings.sum")
    x = layer_norm(emb, "embeddings.ln")

    for l in range(LAYERS):
        p = f"layer{l}"

        def heads(t: str, perm) -> str:
            r = node("Reshape", [t, "heads_shape"], f"{t}.heads")
            return node("Transpose", [r], f"{t}.t", perm=perm)

        q = heads(linear(x, f"{p}.attn.q", HIDDEN, HIDDEN), [0, 2, 1, 3])  # [b, h, s, d]
        k = heads(linear(x, f"{p}.attn.k", HIDDEN, HIDDEN), [0, 2, 3, 1])  # [b, h, d, s]
        v = heads(linear(x, f"{p}.attn.v", HIDDEN, HIDDEN), [0, 2, 1, 3])  # [b, h, s, d]
        scores = node("MatMul", [q, k], f"{p}.attn.scores")
        scaled = node("Div", [scores, "sqrt_head_dim"], f"{p}.attn.scaled")
        probs = node("Softmax", [scaled], f"{p}.attn.probs", axis=-1)
        ctx = node("MatMul", [probs, v], f"{p}.attn.context")
        ctx = node("Transpose", [ctx], f"{p}.attn.context.t", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, "hidden_shape"], f"{p}.attn.context.merged")
        attn = linear(ctx, f"{p}.attn.out", HIDDEN, HIDDEN)
        x = layer_norm(node("Add", [attn, x], f"{p}.attn.residual"), f"{p}.attn.ln")

        h = linear(x, f"{p}.ffn.up", HIDDEN, FFN)
        erf = node("Erf", [node("Div", [h, "sqrt2"], f"{p}.gelu.scaled")], f"{p}.gelu.erf")
        gate = node("Mul", [node("Add", [erf, "one"], f"{p}.gelu.onep"), "half"], f"{p}.gelu.gate")
        h = node("Mul", [h, gate], f"{p}.gelu.out")
        h = linear(h, f"{p}.ffn.down", FFN, HIDDEN)
        x = layer_norm(node("Add", [h, x], f"{p}.ffn.residual"), f"{p}.ffn.ln")

    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="last_hidden_state"))
    graph = helper.make_graph(
        nodes,
        "bert_encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", SEQ])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", SEQ, HIDDEN])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="strata-xtask make_models.py"
    )
    model.ir_version = 8
    return model


def make_bert_encoder(out_dir: str) -> str:
    model = build(rng_for(NAME))
    onnx.checker.check_model(model, full_check=True)
    ids = rng_for(NAME + "/input").integers(0, VOCAB, size=[1, SEQ], dtype=np.int64)
    feeds = {"input_ids": ids}
    outputs = run_reference(model, feeds)
    describe_outputs(NAME, model, outputs)
    if not np.all(np.isfinite(outputs[0])) or float(np.std(outputs[0])) < 0.1:
        raise RuntimeError(f"{NAME}: degenerate reference output")
    return write_test_case(out_dir, NAME, model, feeds, outputs)
