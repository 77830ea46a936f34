"""onnxruntime's side of `cargo xtask bench` (benches/src/bin/compare).

It lives in its own folder so that editing it does not change the key of the generated test
models (which hashes the files of xtask/python/ itself).

usage:
  ort_worker.py serve
      A line protocol over stdin/stdout, one JSON object per line each way; every reply
      has "error" when the request failed. Requests ("cmd"):
        info                       versions of Python, onnxruntime, numpy and its BLAS
        load model threads batch inputs outputs
                                   a session (intra_op_num_threads=threads, inter_op 1,
                                   sequential, all graph optimizations) on the .pb inputs
                                   repeated `batch` times along axis 0; replies load_ms
                                   (session creation), first_ms (first run) and the first
                                   run's check against the .pb outputs (repeated alike)
        run                        one run of the loaded session: ms (perf_counter around
                                   sess.run)
        sgemm n                    one n x n x n float32 numpy matmul (OpenBLAS sgemm): ms
  ort_worker.py probe MODEL THREADS INPUT.pb...
      In a fresh process: load + first run + 3 runs; prints {"load_ms", "first_ms",
      "rss_kb"}, rss_kb being the growth of VmHWM over its value after the imports and
      after reading the inputs.
  ort_worker.py free-batch IN.onnx OUT.onnx
      A copy whose graph inputs and outputs have the symbolic batch `batch` in dim 0 and
      whose constant Reshape shapes starting with a literal 1 start with -1 instead.
"""
import json
import sys
import time

import numpy as np

ATOL = 1e-7
RTOL = 1e-3


def vm_hwm_kb():
    """Peak resident set size of this process (kB), from /proc/self/status."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def read_pb(path):
    from onnx import TensorProto, numpy_helper

    tensor = TensorProto()
    with open(path, "rb") as f:
        tensor.ParseFromString(f.read())
    return numpy_helper.to_array(tensor)


def repeat_batch(array, batch):
    return array if batch == 1 else np.concatenate([array] * batch, axis=0)


def make_session(model, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def check(actual, expected):
    """The ONNX backend-test rule over all outputs: worst max |a - e|, mismatch count."""
    result = {"max_abs_diff": 0.0, "mismatches": 0, "shape_ok": True}
    for a, e in zip(actual, expected):
        if a.shape != e.shape:
            result["shape_ok"] = False
            continue
        a, e = a.astype(np.float64), e.astype(np.float64)
        diff = np.abs(a - e)
        if diff.size:
            worst = float(np.max(diff))
            result["max_abs_diff"] = max(result["max_abs_diff"], worst) if worst == worst else worst
        ok = diff <= ATOL + RTOL * np.abs(e)
        result["mismatches"] += int(diff.size - np.count_nonzero(ok))
    if result["max_abs_diff"] != result["max_abs_diff"]:
        result["max_abs_diff"] = None  # NaN: not JSON
    return result


class Worker:
    def __init__(self):
        self.session = None
        self.feeds = None
        self.gemm = {}

    def info(self, _req):
        import platform

        import onnxruntime as ort

        blas = None
        try:
            from threadpoolctl import threadpool_info

            blas = [
                {k: i.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                for i in threadpool_info()
                if i.get("user_api") == "blas"
            ]
        except ImportError:
            pass
        return {
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "numpy": np.__version__,
            "blas": blas,
        }

    def load(self, req):
        batch = req.get("batch", 1)
        inputs = [repeat_batch(read_pb(p), batch) for p in req["inputs"]]
        expected = [repeat_batch(read_pb(p), batch) for p in req["outputs"]]
        self.session = None
        start = time.perf_counter()
        self.session = make_session(req["model"], req["threads"])
        loaded = time.perf_counter()
        names = [i.name for i in self.session.get_inputs()]
        if len(names) != len(inputs):
            raise ValueError(f"model has {len(names)} inputs, test data {len(inputs)}")
        self.feeds = dict(zip(names, inputs))
        outputs = self.session.run(None, self.feeds)
        done = time.perf_counter()
        return {
            "load_ms": (loaded - start) * 1e3,
            "first_ms": (done - loaded) * 1e3,
            "check": check(outputs, expected),
        }

    def run(self, _req):
        if self.session is None:
            raise ValueError("no session loaded")
        start = time.perf_counter()
        self.session.run(None, self.feeds)
        return {"ms": (time.perf_counter() - start) * 1e3}

    def sgemm(self, req):
        n = req["n"]
        if n not in self.gemm:
            rng = np.random.default_rng(0)
            a = rng.uniform(-1, 1, (n, n)).astype(np.float32)
            b = rng.uniform(-1, 1, (n, n)).astype(np.float32)
            self.gemm[n] = (a, b, np.empty((n, n), np.float32))
        a, b, c = self.gemm[n]
        start = time.perf_counter()
        np.matmul(a, b, out=c)
        return {"ms": (time.perf_counter() - start) * 1e3}


def serve():
    worker = Worker()
    handlers = {"info": worker.info, "load": worker.load, "run": worker.run, "sgemm": worker.sgemm}
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            reply = handlers[req["cmd"]](req)
        except Exception as e:  # reported to the caller, which keeps going
            reply = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def probe(model, threads, input_paths):
    inputs = [read_pb(p) for p in input_paths]
    import onnxruntime  # noqa: F401  (imported before the baseline)

    baseline = vm_hwm_kb()
    start = time.perf_counter()
    session = make_session(model, int(threads))
    loaded = time.perf_counter()
    feeds = dict(zip([i.name for i in session.get_inputs()], inputs))
    session.run(None, feeds)
    first = time.perf_counter()
    for _ in range(3):
        session.run(None, feeds)
    peak = vm_hwm_kb()
    rss = peak - baseline if peak is not None and baseline is not None else None
    print(json.dumps({
        "load_ms": (loaded - start) * 1e3,
        "first_ms": (first - loaded) * 1e3,
        "rss_kb": rss,
    }))


def free_batch(src, dst):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(src)
    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    del graph.value_info[:]
    shapes = {n.input[1] for n in graph.node if n.op_type == "Reshape" and len(n.input) > 1}
    tensors = [i for i in graph.initializer if i.name in shapes]
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] in shapes:
            tensors += [a.t for a in node.attribute if a.name == "value"]
    for tensor in tensors:
        shape = numpy_helper.to_array(tensor)
        if shape.ndim == 1 and shape.size > 1 and shape[0] == 1 and -1 not in shape:
            shape = shape.copy()
            shape[0] = -1
            tensor.CopyFrom(numpy_helper.from_array(shape, tensor.name))
    onnx.save(model, dst)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "serve":
        serve()
    elif len(sys.argv) >= 4 and sys.argv[1] == "probe":
        probe(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) == 4 and sys.argv[1] == "free-batch":
        free_batch(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
