"""Talks to a running strata-server with NVIDIA's own v2 client (tritonclient.http) and
prints what it got as one JSON object on stdout. Run by crates/api/tests/tritonclient.rs,
which compares the numbers with the facade's output on the same input.

usage: tritonclient_check.py HOST:PORT
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def pixels():
    # Same formula as digit_pixels() in tests/common/mod.rs.
    i = np.arange(2 * 64)
    return (((i * 7 + i // 64) % 17).astype(np.float32)).reshape(2, 64)


def infer(client, binary):
    x = httpclient.InferInput("pixels", [2, 64], "FP32")
    x.set_data_from_numpy(pixels(), binary_data=binary)
    outputs = [
        httpclient.InferRequestedOutput("probabilities", binary_data=binary),
        httpclient.InferRequestedOutput("label", binary_data=binary),
    ]
    result = client.infer("digits", [x], outputs=outputs, request_id=f"tc-{binary}")
    return {
        "id": result.get_response()["id"],
        "probabilities": result.as_numpy("probabilities").astype(float).ravel().tolist(),
        "label": result.as_numpy("label").astype(int).ravel().tolist(),
    }


def main():
    client = httpclient.InferenceServerClient(url=sys.argv[1])
    report = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server": client.get_server_metadata(),
        "model_ready": client.is_model_ready("digits"),
        "metadata": client.get_model_metadata("digits"),
        "config": client.get_model_config("digits"),
        "json": infer(client, False),
        "binary": infer(client, True),
    }
    # BYTES through the identity model, binary both ways.
    words = np.array([[b"strata", b""], [b"v2", b"\xc3\xa9"]], dtype=np.object_)
    x = httpclient.InferInput("in_BYTES", [2, 2], "BYTES")
    x.set_data_from_numpy(words, binary_data=True)
    inputs = [x]
    for name, dtype, np_type in [("BOOL", "BOOL", np.bool_), ("INT8", "INT8", np.int8),
                                 ("UINT64", "UINT64", np.uint64), ("FP16", "FP16", np.float16),
                                 ("FP64", "FP64", np.float64)]:
        t = httpclient.InferInput(f"in_{name}", [2, 2], dtype)
        t.set_data_from_numpy(np.array([[1, 0], [0, 1]], dtype=np_type), binary_data=name != "FP64")
        inputs.append(t)
    others = ["INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "FP32", "BF16"]
    for name in others:
        if name == "BF16":
            t = httpclient.InferInput("in_BF16", [2, 2], "BF16")
            import ml_dtypes  # a tritonclient dependency

            t.set_data_from_numpy(np.array([[1, 2], [3, 4]], dtype=ml_dtypes.bfloat16), binary_data=True)
        else:
            t = httpclient.InferInput(f"in_{name}", [2, 2], name)
            t.set_data_from_numpy(np.array([[1, 2], [3, 4]], dtype=getattr(np, name.lower().replace("fp32", "float32"))), binary_data=True)
        inputs.append(t)
    result = client.infer("identity", inputs)
    report["bytes"] = [w.decode("utf-8") for w in result.as_numpy("out_BYTES").ravel()]
    report["int8"] = result.as_numpy("out_INT8").astype(int).ravel().tolist()
    report["uint64"] = result.as_numpy("out_UINT64").astype(int).ravel().tolist()
    report["fp16"] = result.as_numpy("out_FP16").astype(float).ravel().tolist()
    report["bool"] = result.as_numpy("out_BOOL").astype(bool).ravel().tolist()
    report["bf16"] = result.as_numpy("out_BF16").astype(float).ravel().tolist()
    # Errors reach the client as exceptions carrying the server's message.
    try:
        client.infer("nope", [x])
        report["unknown_model_error"] = None
    except InferenceServerException as e:
        report["unknown_model_error"] = str(e)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
