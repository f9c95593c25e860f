#!/usr/bin/env python3
"""The reference peer for inferd's benchmarks: NVIDIA Triton Inference Server 2.51 (the tritonserver binary that
PyPI's nvidia-pytriton==0.7.0 bundles) serving models through its Python backend with Triton's own dynamic
batcher, on 127.0.0.1 only.

  peer_triton.py [--port-base 18000] [--delay-us 100] [--max-batch 64] NAME=SPEC ...

SPEC is either a path to an .onnx file (run by onnxruntime, one intra-op thread, inputs and outputs read from
the file with the first dimension as the batch), or `identity:DTYPE:DIMS` such as `identity:FP32:3,224,224`: an
identity function in numpy (OUTPUT0 = INPUT0, same datatype and shape), the peer of inferd's built-in `identity`
backend. HTTP listens on the port base, gRPC on base+1, metrics on base+2.

Start it through scripts/peer_triton.sh, which installs its venv, runs it in its own session and waits until
every model is ready. Why PyTriton: it is the one way to get a real tritonserver from the registries this
project may use (PyPI); its Python backend adds a process hop per batch that Triton's native ONNX Runtime
backend would not, which the results must state when they compare.
"""
import argparse
import sys

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

# Triton's datatype names (as in config.pbtxt without TYPE_, and in the KServe V2 protocol) for identity specs.
TRITON_TO_NUMPY = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
                   "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
                   "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
ONNX_TO_NUMPY = {"tensor(bool)": np.bool_, "tensor(uint8)": np.uint8, "tensor(int8)": np.int8,
                 "tensor(int16)": np.int16, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
                 "tensor(float16)": np.float16, "tensor(float)": np.float32, "tensor(double)": np.float64}


class SpecError(ValueError):
    """A NAME=SPEC argument that names no model we can serve."""


def parse_model(arg):
    """NAME=SPEC -> (name, ("onnx", path) | ("identity", dtype, dims)); argparse reports a SpecError."""
    name, sep, spec = arg.partition("=")
    if not sep or not name or not spec:
        raise SpecError(f"{arg!r}: expected NAME=PATH.onnx or NAME=identity:DTYPE:DIMS")
    if not spec.startswith("identity:"):
        return name, ("onnx", spec)
    parts = spec.split(":")
    if len(parts) != 3 or parts[1] not in TRITON_TO_NUMPY:
        raise SpecError(f"{arg!r}: expected identity:DTYPE:DIMS with DTYPE one of {', '.join(TRITON_TO_NUMPY)}")
    try:
        dims = tuple(int(d) for d in parts[2].split(","))
    except ValueError:
        raise SpecError(f"{arg!r}: DIMS must be comma-separated integers, as 3,224,224") from None
    if not dims or any(d < 1 for d in dims):
        raise SpecError(f"{arg!r}: DIMS must be positive (the batch dimension is added by the peer)")
    return name, ("identity", TRITON_TO_NUMPY[parts[1]], dims)


def model_arg(arg):
    try:
        return parse_model(arg)
    except SpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def onnx_model(path):
    """(infer function, inputs, outputs) for an ONNX file run by onnxruntime on one thread."""
    import onnxruntime as ort  # only a peer that serves ONNX files needs it

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # like inferd's default: the machine's cores are shared with the client
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def tensors(args):
        # Dimension 0 is the batch (PyTriton adds it back); symbolic dimensions are variable (-1).
        return [Tensor(name=a.name, dtype=ONNX_TO_NUMPY[a.type],
                       shape=tuple(d if isinstance(d, int) else -1 for d in a.shape[1:])) for a in args]

    names = [o.name for o in session.get_outputs()]

    @batch
    def infer(**inputs):
        return dict(zip(names, session.run(names, inputs)))

    return infer, tensors(session.get_inputs()), tensors(session.get_outputs())


def identity_model(dtype, dims):
    """(infer function, inputs, outputs) answering OUTPUT0 = INPUT0, as inferd's identity backend does."""

    @batch
    def infer(INPUT0):
        return {"OUTPUT0": INPUT0}

    return infer, [Tensor(name="INPUT0", dtype=dtype, shape=dims)], [Tensor(name="OUTPUT0", dtype=dtype, shape=dims)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port-base", type=int, default=18000, help="HTTP port; gRPC +1, metrics +2")
    p.add_argument("--delay-us", type=int, default=100, help="dynamic batcher's max_queue_delay_microseconds")
    p.add_argument("--max-batch", type=int, default=64, help="max_batch_size of every model")
    p.add_argument("models", nargs="+", type=model_arg, metavar="NAME=SPEC",
                   help="NAME=PATH.onnx or NAME=identity:DTYPE:DIMS (e.g. identity:FP32:3,224,224)")
    a = p.parse_args()

    config = TritonConfig(http_address="127.0.0.1", http_port=a.port_base, grpc_address="127.0.0.1",
                          grpc_port=a.port_base + 1, metrics_address="127.0.0.1", metrics_port=a.port_base + 2,
                          allow_gpu_metrics=False)
    # PyTriton restricts the statistics endpoint (among others) by default; perf_analyzer reads it, and the peer
    # listens on loopback only, so nothing is restricted.
    security = TritonSecurityConfig(restricted_endpoints=[])
    with Triton(config=config, security_config=security) as triton:
        for name, spec in a.models:
            infer, inputs, outputs = onnx_model(spec[1]) if spec[0] == "onnx" else identity_model(*spec[1:])
            triton.bind(model_name=name, infer_func=infer, inputs=inputs, outputs=outputs,
                        config=ModelConfig(max_batch_size=a.max_batch,
                                           batcher=DynamicBatcher(max_queue_delay_microseconds=a.delay_us)))
        triton.serve()


if __name__ == "__main__":
    sys.exit(main())
