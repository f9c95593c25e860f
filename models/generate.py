#!/usr/bin/env python3
"""Generate the example model repository (Triton layout) under models/.

Usage (from the repository root):
    .venv/bin/python models/generate.py           # (re)write all models
    .venv/bin/python models/generate.py --verify  # also run each model once with onnxruntime

Deterministic and idempotent: the same inputs always give byte-identical files,
and files whose content is unchanged are not rewritten.
"""

import json
import os
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.abspath(__file__))
# Models that exist only to test the server (one per datatype) live in the tests' own repository.
TEST_ROOT = os.path.join(os.path.dirname(ROOT), "tests", "models")
OPSET = 17
IR_VERSION = 8  # IR version matching opset 17 (onnx 1.12); loadable by onnxruntime 1.31

# (Triton type suffix, ONNX element type, numpy dtype used for verification)
DATATYPES = [
    ("BOOL", TensorProto.BOOL, np.bool_),
    ("UINT8", TensorProto.UINT8, np.uint8),
    ("UINT16", TensorProto.UINT16, np.uint16),
    ("UINT32", TensorProto.UINT32, np.uint32),
    ("UINT64", TensorProto.UINT64, np.uint64),
    ("INT8", TensorProto.INT8, np.int8),
    ("INT16", TensorProto.INT16, np.int16),
    ("INT32", TensorProto.INT32, np.int32),
    ("INT64", TensorProto.INT64, np.int64),
    ("FP16", TensorProto.FLOAT16, np.float16),
    ("BF16", TensorProto.BFLOAT16, np.uint16),  # raw bf16 bits
    ("FP32", TensorProto.FLOAT, np.float32),
    ("FP64", TensorProto.DOUBLE, np.float64),
    ("STRING", TensorProto.STRING, object),
]


# ---------------------------------------------------------------- helpers

def write_if_changed(path, data):
    if isinstance(data, str):
        data = data.encode()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        with open(path, "rb") as f:
            if f.read() == data:
                return
    with open(path, "wb") as f:
        f.write(data)
    print("wrote", os.path.relpath(path, os.path.dirname(ROOT)))


def make_model(graph):
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="triton-rs-models-generate",
        producer_version="1",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def vi(name, elem_type, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def io_block(kind, entries):
    """entries: list of (name, triton_type, dims)"""
    blocks = []
    for name, dtype, dims in entries:
        lines = [
            "  {",
            f'    name: "{name}"',
            f"    data_type: {dtype}",
            f"    dims: [ {', '.join(str(d) for d in dims)} ]",
        ]
        lines.append("  }")
        blocks.append("\n".join(lines))
    return f"{kind} [\n" + ",\n".join(blocks) + "\n]\n"


def config(name, max_batch_size, inputs, outputs, dynamic_batching=False):
    text = (
        f'name: "{name}"\n'
        'platform: "onnxruntime_onnx"\n'
        f"max_batch_size: {max_batch_size}\n"
        + io_block("input", inputs)
        + io_block("output", outputs)
        + "instance_group [\n  {\n    count: 1\n    kind: KIND_CPU\n  }\n]\n"
    )
    if dynamic_batching:
        text += "dynamic_batching {\n  max_queue_delay_microseconds: 0\n}\n"
    return text


def save(name, model, cfg, root=ROOT):
    d = os.path.join(root, name)
    write_if_changed(os.path.join(d, "1", "model.onnx"), model.SerializeToString())
    if cfg is not None:
        write_if_changed(os.path.join(d, "config.pbtxt"), cfg)


# ---------------------------------------------------------------- models

def simple_model():
    shape = ["batch", 16]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "simple",
        [vi("INPUT0", TensorProto.INT32, shape), vi("INPUT1", TensorProto.INT32, shape)],
        [vi("OUTPUT0", TensorProto.INT32, shape), vi("OUTPUT1", TensorProto.INT32, shape)],
    )
    io = lambda *names: [(n, "TYPE_INT32", [16]) for n in names]  # noqa: E731
    return make_model(graph), config("simple", 8, io("INPUT0", "INPUT1"), io("OUTPUT0", "OUTPUT1"))


def simple_int8_model():
    """Triton's `simple_int8`: `simple` in INT8 (sums and differences wrap around, as int8 arithmetic does)."""
    shape = ["batch", 16]
    I8 = TensorProto.INT8
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        "simple_int8",
        [vi("INPUT0", I8, shape), vi("INPUT1", I8, shape)],
        [vi("OUTPUT0", I8, shape), vi("OUTPUT1", I8, shape)],
    )
    io = lambda *names: [(n, "TYPE_INT8", [16]) for n in names]  # noqa: E731
    return make_model(graph), config("simple_int8", 8, io("INPUT0", "INPUT1"), io("OUTPUT0", "OUTPUT1"))


def simple_identity():
    """Triton's `simple_identity` (BYTES [-1] in, the same out) on the built-in identity backend: no model file,
    only the config and an (otherwise empty) version folder, kept in git by a placeholder file."""
    d = os.path.join(ROOT, "simple_identity")
    cfg = config(
        "simple_identity", 8, [("INPUT0", "TYPE_STRING", [-1])], [("OUTPUT0", "TYPE_STRING", [-1])]
    ).replace('platform: "onnxruntime_onnx"', 'backend: "identity"')
    write_if_changed(os.path.join(d, "config.pbtxt"), cfg)
    write_if_changed(os.path.join(d, "1", ".gitkeep"), "")


def serving_identity(name, dims, max_batch_size):
    """An FP32 model on the built-in identity backend with dynamic batching: the cost of serving alone, without a
    model's compute (`identity` has `mlp`'s input; `identity_image` one 3x224x224 image, for large tensors)."""
    d = os.path.join(ROOT, name)
    cfg = config(
        name, max_batch_size, [("INPUT0", "TYPE_FP32", dims)], [("OUTPUT0", "TYPE_FP32", dims)], dynamic_batching=True
    ).replace('platform: "onnxruntime_onnx"', 'backend: "identity"')
    write_if_changed(os.path.join(d, "config.pbtxt"), cfg)
    write_if_changed(os.path.join(d, "1", ".gitkeep"), "")


def simple_plus_model():
    """`simple` with 1000 added to both outputs: a second version whose answers are told apart from the first,
    for rollout tests."""
    shape = ["batch", 16]
    k = helper.make_tensor("K", TensorProto.INT32, [1], [1000])
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["sum"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["diff"]),
            helper.make_node("Add", ["sum", "K"], ["OUTPUT0"]),
            helper.make_node("Add", ["diff", "K"], ["OUTPUT1"]),
        ],
        "simple_plus",
        [vi("INPUT0", TensorProto.INT32, shape), vi("INPUT1", TensorProto.INT32, shape)],
        [vi("OUTPUT0", TensorProto.INT32, shape), vi("OUTPUT1", TensorProto.INT32, shape)],
        initializer=[k],
    )
    io = lambda *names: [(n, "TYPE_INT32", [16]) for n in names]  # noqa: E731
    return make_model(graph), config("simple_plus", 8, io("INPUT0", "INPUT1"), io("OUTPUT0", "OUTPUT1"))


def simple_string_model():
    S, I = TensorProto.STRING, TensorProto.INT32
    shape = ["batch", 16]
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["INPUT0"], ["in0_i32"], to=I),
            helper.make_node("Cast", ["INPUT1"], ["in1_i32"], to=I),
            helper.make_node("Add", ["in0_i32", "in1_i32"], ["sum_i32"]),
            helper.make_node("Sub", ["in0_i32", "in1_i32"], ["diff_i32"]),
            helper.make_node("Cast", ["sum_i32"], ["OUTPUT0"], to=S),
            helper.make_node("Cast", ["diff_i32"], ["OUTPUT1"], to=S),
        ],
        "simple_string",
        [vi("INPUT0", S, shape), vi("INPUT1", S, shape)],
        [vi("OUTPUT0", S, shape), vi("OUTPUT1", S, shape)],
    )
    io = lambda *names: [(n, "TYPE_STRING", [16]) for n in names]  # noqa: E731
    return make_model(graph), config(
        "simple_string", 8, io("INPUT0", "INPUT1"), io("OUTPUT0", "OUTPUT1")
    )


def mlp_weights():
    """Deterministic MLP weights (w1, b1, w2, b2), float32.

    Weights use the PyTorch/candle Linear layout [out_features, in_features]
    (the ONNX Gemm nodes use transB=1); init is U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    """
    rng = np.random.default_rng(0)

    def linear(fan_in, fan_out):
        bound = 1.0 / np.sqrt(fan_in)
        w = rng.uniform(-bound, bound, size=(fan_out, fan_in)).astype(np.float32)
        b = rng.uniform(-bound, bound, size=(fan_out,)).astype(np.float32)
        return w, b

    w1, b1 = linear(64, 256)
    w2, b2 = linear(256, 10)
    return w1, b1, w2, b2


def mlp_onnx():
    w1, b1, w2, b2 = mlp_weights()
    F = TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["INPUT", "w1", "b1"], ["h"], transB=1),
            helper.make_node("Relu", ["h"], ["h_relu"]),
            helper.make_node("Gemm", ["h_relu", "w2", "b2"], ["OUTPUT"], transB=1),
        ],
        "mlp",
        [vi("INPUT", F, ["batch", 64])],
        [vi("OUTPUT", F, ["batch", 10])],
        initializer=[
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(b2, "b2"),
        ],
    )
    return make_model(graph)


def safetensors_bytes(tensors):
    """The safetensors format: a little-endian u64 header length, a JSON header (name -> dtype, shape, byte
    offsets), then the raw little-endian data."""
    header, offset, blobs = {}, 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def mlp_candle():
    """The ONNX MLP's twin for the candle backend: the same weights, in safetensors with mlp.json."""
    w1, b1, w2, b2 = mlp_weights()
    d = os.path.join(ROOT, "mlp_candle")
    weights = {"fc1.weight": w1, "fc1.bias": b1, "fc2.weight": w2, "fc2.bias": b2}
    write_if_changed(os.path.join(d, "1", "model.safetensors"), safetensors_bytes(weights))
    layers = {
        "input": "INPUT",
        "output": "OUTPUT",
        "layers": [
            {"weight": "fc1.weight", "bias": "fc1.bias", "activation": "relu"},
            {"weight": "fc2.weight", "bias": "fc2.bias"},
        ],
    }
    write_if_changed(os.path.join(d, "1", "mlp.json"), json.dumps(layers, indent=2) + "\n")
    cfg = mlp_config().replace('name: "mlp"', 'name: "mlp_candle"').replace(
        'platform: "onnxruntime_onnx"', 'backend: "candle"'
    )
    write_if_changed(os.path.join(d, "config.pbtxt"), cfg)


def mlp_config():
    return config(
        "mlp",
        64,
        [("INPUT", "TYPE_FP32", [64])],
        [("OUTPUT", "TYPE_FP32", [10])],
        dynamic_batching=True,
    )


def identity_model(tname, elem_type):
    name = f"identity_{tname.lower()}"
    shape = ["batch", "n"]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])],
        name,
        [vi("INPUT0", elem_type, shape)],
        [vi("OUTPUT0", elem_type, shape)],
    )
    cfg = config(
        name, 8, [("INPUT0", f"TYPE_{tname}", [-1])], [("OUTPUT0", f"TYPE_{tname}", [-1])]
    )
    return name, make_model(graph), cfg


# Calibrated with onnxruntime 1.31 (1 intra-op thread) on the 2-core dev machine: one Loop
# iteration (64x64 MatMul + Tanh) takes ~4 us, so INPUT0 = 100 runs for ~100 ms.
SLOW_ITERS_PER_MS = 250.0
SLOW_MAX_MS = 60000.0  # cap so a huge INPUT0 cannot wedge the instance for hours
SLOW_N = 64


def slow_onnx():
    """`slow`: OUTPUT0 = INPUT0 exactly, after burning CPU for ~max(INPUT0) milliseconds.

    An ONNX Loop runs round(max(INPUT0) * SLOW_ITERS_PER_MS) iterations of v = Tanh(v @ W)
    on a 64x64 loop-carried state; the final state is folded into the output as
    OUTPUT0 = INPUT0 * (0 * sum(v) + 1), so onnxruntime cannot prune the loop, while the
    output stays bit-identical to the input (Tanh keeps sum(v) finite; -0.0 and inf survive).
    """
    F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
    rng = np.random.default_rng(2)
    w = (rng.standard_normal((SLOW_N, SLOW_N)) / np.sqrt(SLOW_N)).astype(np.float32)
    v0 = np.full((SLOW_N, SLOW_N), 0.5, dtype=np.float32)
    scalar = lambda v, n: numpy_helper.from_array(np.array(v, dtype=np.float32), n)  # noqa: E731
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["v_in", "w"], ["mm"]),
            helper.make_node("Tanh", ["mm"], ["v_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "spin_body",
        [vi("iter", I64, []), vi("cond_in", B, []), vi("v_in", F, [SLOW_N, SLOW_N])],
        [vi("cond_out", B, []), vi("v_out", F, [SLOW_N, SLOW_N])],
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["INPUT0"], ["max_ms"], keepdims=0),
            helper.make_node("Max", ["max_ms", "zero"], ["max_ms_pos"]),
            helper.make_node("Min", ["max_ms_pos", "max_ms_cap"], ["ms"]),
            helper.make_node("Mul", ["ms", "iters_per_ms"], ["trips_f"]),
            helper.make_node("Round", ["trips_f"], ["trips_r"]),
            helper.make_node("Cast", ["trips_r"], ["trips"], to=I64),
            helper.make_node("Loop", ["trips", "", "v0"], ["v_final"], body=body),
            helper.make_node("ReduceSum", ["v_final"], ["spin"], keepdims=0),
            helper.make_node("Mul", ["spin", "zero"], ["spin_zero"]),
            helper.make_node("Add", ["spin_zero", "one"], ["unit"]),
            helper.make_node("Mul", ["INPUT0", "unit"], ["OUTPUT0"]),
        ],
        "slow",
        [vi("INPUT0", F, ["batch", 1])],
        [vi("OUTPUT0", F, ["batch", 1])],
        initializer=[
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(v0, "v0"),
            scalar(0.0, "zero"),
            scalar(1.0, "one"),
            scalar(SLOW_MAX_MS, "max_ms_cap"),
            scalar(SLOW_ITERS_PER_MS, "iters_per_ms"),
        ],
    )
    return make_model(graph)


def slow_config(name, max_queue_size, timeout_action):
    return config(
        name, 8, [("INPUT0", "TYPE_FP32", [1])], [("OUTPUT0", "TYPE_FP32", [1])]
    ) + (
        "dynamic_batching {\n"
        "  max_queue_delay_microseconds: 0\n"
        "  priority_levels: 3\n"
        "  default_priority_level: 2\n"
        "  default_queue_policy {\n"
        f"    max_queue_size: {max_queue_size}\n"
        f"    timeout_action: {timeout_action}\n"
        "    default_timeout_microseconds: 0\n"
        "    allow_timeout_override: true\n"
        "  }\n"
        "}\n"
    )


def sequence_control(name, kind, pair):
    """One `control_input` entry of a sequence_batching block; `pair` is e.g. 'int32_false_true: [ 0, 1 ]'."""
    return f'    {{\n      name: "{name}"\n      control [ {{ kind: {kind} {pair} }} ]\n    }}'


def sequence_config(name, inputs, outputs, batching, instances=1):
    """A stateful model's config: `batching` is the body of its sequence_batching block."""
    return (
        config(name, 8, inputs, outputs).replace("count: 1", f"count: {instances}")
        + "sequence_batching {\n"
        + batching
        + "}\n"
    )


def simple_sequence_model():
    """Triton's `simple_sequence` as its examples check it: OUTPUT = INPUT + START on rows that are READY, so a
    sequence's first request answers its value plus one and the later ones echo theirs. START and READY are
    filled in by the server's sequence batcher, not sent by clients."""
    I = TensorProto.INT32
    shape = ["batch", 1]
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["INPUT", "START"], ["plus_start"]),
            helper.make_node("Mul", ["plus_start", "READY"], ["OUTPUT"]),
        ],
        "simple_sequence",
        [vi("INPUT", I, shape), vi("START", I, shape), vi("READY", I, shape)],
        [vi("OUTPUT", I, shape)],
    )
    controls = ",\n".join(
        [
            sequence_control("START", "CONTROL_SEQUENCE_START", "int32_false_true: [ 0, 1 ]"),
            sequence_control("READY", "CONTROL_SEQUENCE_READY", "int32_false_true: [ 0, 1 ]"),
        ]
    )
    cfg = sequence_config(
        "simple_sequence",
        [("INPUT", "TYPE_INT32", [1])],
        [("OUTPUT", "TYPE_INT32", [1])],
        "  max_sequence_idle_microseconds: 5000000\n  control_input [\n" + controls + "\n  ]\n",
    )
    return make_model(graph), cfg


def accumulator_onnx():
    """A true accumulator with implicit state: ACC = INPUT on START, else ACC_IN + INPUT; OUTPUT is ACC and so
    is the state output ACC_OUT, which the server feeds back as ACC_IN on the sequence's next request."""
    I = TensorProto.INT32
    shape = ["batch", 1]
    one = helper.make_tensor("ONE", I, [1], [1])
    graph = helper.make_graph(
        [
            helper.make_node("Sub", ["ONE", "START"], ["not_start"]),
            helper.make_node("Mul", ["ACC_IN", "not_start"], ["kept"]),
            helper.make_node("Add", ["kept", "INPUT"], ["OUTPUT"]),
            helper.make_node("Identity", ["OUTPUT"], ["ACC_OUT"]),
        ],
        "simple_accumulator",
        [vi("INPUT", I, shape), vi("START", I, shape), vi("ACC_IN", I, shape)],
        [vi("OUTPUT", I, shape), vi("ACC_OUT", I, shape)],
        initializer=[one],
    )
    return make_model(graph)


ACCUMULATOR_STATE = (
    "  state [\n    {\n      input_name: \"ACC_IN\"\n      output_name: \"ACC_OUT\"\n      data_type: TYPE_INT32\n"
    "      dims: [ 1 ]\n      initial_state: [ { data_type: TYPE_INT32 dims: [ 1 ] zero_data: true name: \"zeros\" } ]\n"
    "    }\n  ]\n"
)


def accumulator_config(name, strategy, idle_us, instances):
    start = sequence_control("START", "CONTROL_SEQUENCE_START", "int32_false_true: [ 0, 1 ]")
    return sequence_config(
        name,
        [("INPUT", "TYPE_INT32", [1])],
        [("OUTPUT", "TYPE_INT32", [1])],
        f"  max_sequence_idle_microseconds: {idle_us}\n{strategy}  control_input [\n{start}\n  ]\n"
        + ACCUMULATOR_STATE,
        instances,
    )


def sequence_controls_model():
    """Echoes the controls the sequence batcher fills in, one datatype each (START fp32, END bool, READY int32,
    CORRID uint64), so tests can see them row by row."""
    shape = ["batch", 1]
    ins = [
        ("INPUT", TensorProto.INT32),
        ("START", TensorProto.FLOAT),
        ("END", TensorProto.BOOL),
        ("READY", TensorProto.INT32),
        ("CORRID", TensorProto.UINT64),
    ]
    graph = helper.make_graph(
        [helper.make_node("Identity", [n], [f"OUT_{n}"]) for n, _ in ins],
        "sequence_controls",
        [vi(n, t, shape) for n, t in ins],
        [vi(f"OUT_{n}", t, shape) for n, t in ins],
    )
    controls = ",\n".join(
        [
            sequence_control("START", "CONTROL_SEQUENCE_START", "fp32_false_true: [ 0, 1 ]"),
            sequence_control("END", "CONTROL_SEQUENCE_END", "bool_false_true: [ false, true ]"),
            sequence_control("READY", "CONTROL_SEQUENCE_READY", "int32_false_true: [ 0, 1 ]"),
            sequence_control("CORRID", "CONTROL_SEQUENCE_CORRID", "data_type: TYPE_UINT64"),
        ]
    )
    outs = [
        ("OUT_INPUT", "TYPE_INT32", [1]),
        ("OUT_START", "TYPE_FP32", [1]),
        ("OUT_END", "TYPE_BOOL", [1]),
        ("OUT_READY", "TYPE_INT32", [1]),
        ("OUT_CORRID", "TYPE_UINT64", [1]),
    ]
    cfg = sequence_config(
        "sequence_controls",
        [("INPUT", "TYPE_INT32", [1])],
        outs,
        "  max_sequence_idle_microseconds: 300000\n  control_input [\n" + controls + "\n  ]\n",
    )
    return make_model(graph), cfg


def dyna_controls(corrid_type):
    return ",\n".join(
        [
            sequence_control("START", "CONTROL_SEQUENCE_START", "int32_false_true: [ 0, 1 ]"),
            sequence_control("END", "CONTROL_SEQUENCE_END", "int32_false_true: [ 0, 1 ]"),
            sequence_control("READY", "CONTROL_SEQUENCE_READY", "int32_false_true: [ 0, 1 ]"),
            sequence_control("CORRID", "CONTROL_SEQUENCE_CORRID", f"data_type: {corrid_type}"),
        ]
    )


def simple_dyna_sequence_model():
    """Triton's `simple_dyna_sequence` as its examples (`-d`) check it: OUTPUT = INPUT + START, plus the
    correlation id (CORRID, uint64) on the sequence's END request, on rows that are READY."""
    I = TensorProto.INT32
    shape = ["batch", 1]
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["CORRID"], ["corrid"], to=I),
            helper.make_node("Mul", ["corrid", "END"], ["end_corrid"]),
            helper.make_node("Add", ["INPUT", "START"], ["plus_start"]),
            helper.make_node("Add", ["plus_start", "end_corrid"], ["answer"]),
            helper.make_node("Mul", ["answer", "READY"], ["OUTPUT"]),
        ],
        "simple_dyna_sequence",
        [vi(n, I, shape) for n in ("INPUT", "START", "END", "READY")] + [vi("CORRID", TensorProto.UINT64, shape)],
        [vi("OUTPUT", I, shape)],
    )
    cfg = sequence_config(
        "simple_dyna_sequence",
        [("INPUT", "TYPE_INT32", [1])],
        [("OUTPUT", "TYPE_INT32", [1])],
        "  max_sequence_idle_microseconds: 5000000\n  control_input [\n" + dyna_controls("TYPE_UINT64") + "\n  ]\n",
    )
    return make_model(graph), cfg


def simple_string_dyna_sequence_model():
    """Triton's `simple_string_dyna_sequence` as its examples (`-d`) check it: a string correlation id holding an
    integer; OUTPUT is the running sum of the sequence's inputs (implicit state ACC_IN -> ACC_OUT), plus that
    integer on the END request. Its CORRID is UINT64 (Triton's is a string its C++ backend parses): the server
    turns a string id holding an integer into that number, and refuses any other string with a 400 before the
    model runs, where a Cast inside the model would fail with a server error."""
    I = TensorProto.INT32
    shape = ["batch", 1]
    one = helper.make_tensor("ONE", I, [1], [1])
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["CORRID"], ["corrid"], to=I),
            helper.make_node("Mul", ["corrid", "END"], ["end_corrid"]),
            helper.make_node("Sub", ["ONE", "START"], ["not_start"]),
            helper.make_node("Mul", ["ACC_IN", "not_start"], ["kept"]),
            helper.make_node("Add", ["kept", "INPUT"], ["ACC_OUT"]),
            helper.make_node("Add", ["ACC_OUT", "end_corrid"], ["answer"]),
            helper.make_node("Mul", ["answer", "READY"], ["OUTPUT"]),
        ],
        "simple_string_dyna_sequence",
        [vi(n, I, shape) for n in ("INPUT", "START", "END", "READY", "ACC_IN")]
        + [vi("CORRID", TensorProto.UINT64, shape)],
        [vi("OUTPUT", I, shape), vi("ACC_OUT", I, shape)],
        initializer=[one],
    )
    cfg = sequence_config(
        "simple_string_dyna_sequence",
        [("INPUT", "TYPE_INT32", [1])],
        [("OUTPUT", "TYPE_INT32", [1])],
        "  max_sequence_idle_microseconds: 5000000\n  control_input [\n"
        + dyna_controls("TYPE_UINT64")
        + "\n  ]\n"
        + ACCUMULATOR_STATE,
    )
    return make_model(graph), cfg


def sequence_models():
    save("simple_sequence", *simple_sequence_model())
    acc = accumulator_onnx()
    save("simple_accumulator", acc, accumulator_config("simple_accumulator", "", 5000000, 1))
    oldest = (
        "  oldest {\n    max_candidate_sequences: 4\n    preferred_batch_size: [ 2 ]\n"
        "    max_queue_delay_microseconds: 2000\n  }\n"
    )
    # Test-only: two instances, the oldest strategy and a short idle time.
    save("accumulator_oldest", acc, accumulator_config("accumulator_oldest", oldest, 300000, 2), root=TEST_ROOT)
    save("accumulator_idle", acc, accumulator_config("accumulator_idle", "", 300000, 2), root=TEST_ROOT)
    save("sequence_controls", *sequence_controls_model(), root=TEST_ROOT)
    save("simple_dyna_sequence", *simple_dyna_sequence_model())
    save("simple_string_dyna_sequence", *simple_string_dyna_sequence_model())


def generate():
    save("simple", *simple_model())
    save("simple_string", *simple_string_model())
    save("simple_int8", *simple_int8_model())
    simple_identity()
    serving_identity("identity", [64], 64)
    serving_identity("identity_image", [3, 224, 224], 8)
    save("simple_plus", *simple_plus_model(), root=TEST_ROOT)
    mlp = mlp_onnx()
    save("mlp", mlp, mlp_config())
    save("mlp_autoconf", mlp, None)  # no config.pbtxt: must be auto-completed
    mlp_candle()
    for tname, elem_type, _ in DATATYPES:
        save(*identity_model(tname, elem_type), root=TEST_ROOT)
    slow = slow_onnx()
    save("slow", slow, slow_config("slow", 4, "REJECT"), root=TEST_ROOT)
    save("slow_delay", slow, slow_config("slow_delay", 16, "DELAY"), root=TEST_ROOT)
    sequence_models()


# ---------------------------------------------------------------- verification

def verify():
    import onnxruntime as ort

    def sess(name):
        root = TEST_ROOT if name.startswith(("identity_", "slow")) else ROOT
        path = os.path.join(root, name, "1", "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # as in the server
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    a = np.arange(16, dtype=np.int32).reshape(1, 16).repeat(2, axis=0)
    a[1] *= -3
    b = np.full((2, 16), 5, dtype=np.int32)
    o0, o1 = sess("simple").run(None, {"INPUT0": a, "INPUT1": b})
    assert o0.dtype == np.int32 and (o0 == a + b).all() and (o1 == a - b).all()

    a8 = np.arange(-8, 8, dtype=np.int8).reshape(1, 16)
    a8[0, 0] = 127  # wraps: 127 + 5 = -124
    b8 = np.full((1, 16), 5, dtype=np.int8)
    o0, o1 = sess("simple_int8").run(None, {"INPUT0": a8, "INPUT1": b8})
    assert o0.dtype == np.int8 and (o0 == a8 + b8).all() and (o1 == a8 - b8).all()
    assert o0[0, 0] == -124

    sa, sb = a.astype(str).astype(object), b.astype(str).astype(object)
    o0, o1 = sess("simple_string").run(None, {"INPUT0": sa, "INPUT1": sb})
    assert o0.shape == (2, 16) and list(o0.ravel()) == [str(v) for v in (a + b).ravel()]
    assert list(o1.ravel()) == [str(v) for v in (a - b).ravel()]
    o0, o1 = sess("simple_string").run(
        None, {"INPUT0": np.full((1, 16), "1", object), "INPUT1": np.full((1, 16), "2", object)}
    )
    assert o0[0, 0] == "3" and o1[0, 0] == "-1", (o0[0, 0], o1[0, 0])

    w1, b1, w2, b2 = mlp_weights()
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    ref = np.maximum(x @ w1.T + b1, 0) @ w2.T + b2
    for name in ("mlp", "mlp_autoconf"):
        (y,) = sess(name).run(None, {"INPUT": x})
        assert y.shape == (5, 10) and y.dtype == np.float32
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)

    for tname, elem_type, np_dtype in DATATYPES:
        name = f"identity_{tname.lower()}"
        s = sess(name)
        if tname == "STRING":
            x = np.array([["a", "", "héllo"], ["x", "yz", "0"]], dtype=object)
        elif tname == "BOOL":
            x = np.array([[True, False, True], [False, False, True]])
        else:
            x = (np.arange(6).reshape(2, 3) + 1).astype(np_dtype)
        if tname == "BF16":
            # numpy has no bfloat16: bind raw uint16 bits as bfloat16 buffers.
            x = np.array([[0x3F80, 0x4000, 0xC040]], dtype=np.uint16)  # 1, 2, -3
            y = np.zeros_like(x)
            bind = s.io_binding()
            bind.bind_ortvalue_input(
                "INPUT0", ort.OrtValue.ortvalue_from_numpy_with_onnx_type(x, elem_type)
            )
            bind.bind_ortvalue_output(
                "OUTPUT0", ort.OrtValue.ortvalue_from_numpy_with_onnx_type(y, elem_type)
            )
            s.run_with_iobinding(bind)
        else:
            (y,) = s.run(None, {"INPUT0": x})
            assert y.dtype == x.dtype, (name, y.dtype)
        assert y.shape == x.shape and (y == x).all(), name

    import time

    for name in ("slow", "slow_delay"):
        s = sess(name)
        x = np.array([[1.0], [2.0], [3.0]], dtype=np.float32)
        (y,) = s.run(None, {"INPUT0": x})
        assert y.dtype == np.float32 and y.shape == x.shape and (y == x).all(), (name, y)
        x = np.array([[-0.0], [-5.0], [np.inf], [0.25]], dtype=np.float32)
        (y,) = s.run(None, {"INPUT0": x})
        assert (y == x).all() and np.signbit(y[0, 0]), (name, y)
    s = sess("slow")
    for ms in (0.0, 10.0, 100.0):
        x = np.array([[ms]], dtype=np.float32)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            (y,) = s.run(None, {"INPUT0": x})
            times.append((time.perf_counter() - t0) * 1e3)
            assert (y == x).all()
        print(f"verify: slow INPUT0=[{ms}] median {np.median(times):.1f} ms over 5 runs")

    # Sequence models, fed the controls and state the server's sequence batcher fills in (rows: two sequences).
    col = lambda *v: np.array(v, dtype=np.int32).reshape(-1, 1)  # noqa: E731
    (y,) = sess("simple_sequence").run(None, {"INPUT": col(0, 7), "START": col(1, 0), "READY": col(1, 1)})
    assert (y == col(1, 7)).all()
    y, acc = sess("simple_accumulator").run(None, {"INPUT": col(5, 3), "START": col(1, 0), "ACC_IN": col(9, 10)})
    assert (y == col(5, 13)).all() and (acc == y).all()
    feed = {"INPUT": col(4, 4), "START": col(0, 0), "END": col(1, 0), "READY": col(1, 1)}
    (y,) = sess("simple_dyna_sequence").run(None, {**feed, "CORRID": np.array([[1000], [7]], dtype=np.uint64)})
    assert (y == col(1004, 4)).all()
    corrid = np.array([["1002"], ["3"]], dtype=object)
    y, acc = sess("simple_string_dyna_sequence").run(None, {**feed, "ACC_IN": col(10, 1), "CORRID": corrid})
    assert (acc == col(14, 5)).all() and (y == col(1016, 5)).all()

    print("verify: all models OK")


if __name__ == "__main__":
    generate()
    if "--verify" in sys.argv[1:]:
        verify()
