"""Copies an ONNX model with a free batch dimension: the first dim of every graph input and
output becomes the symbol `batch`, and intermediate value_info (which may pin batch 1) is
dropped. Used by `cargo xtask loadtest` so that the server can stack requests.

usage: batchable.py IN.onnx OUT.onnx
"""
import sys

import onnx


def main():
    model = onnx.load(sys.argv[1])
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del model.graph.value_info[:]
    onnx.save(model, sys.argv[2])


if __name__ == "__main__":
    main()
