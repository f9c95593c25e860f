"""inferd speaks the KServe V2 / Triton protocol well enough for the official
`tritonclient` (HTTP and gRPC) to use it unmodified.

Every test that takes the `triton` fixture runs once per protocol (http, grpc).
"""

import queue
from functools import partial

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

# --------------------------------------------------------------------- helpers

NOT_FOUND = {"http": "404", "grpc": "StatusCode.NOT_FOUND"}
INVALID_ARGUMENT = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}


def simple_inputs(module, a, b, binary_data=True, datatype="INT32"):
    """INPUT0/INPUT1 for `simple`/`simple_string` from two equally-shaped arrays."""
    inputs = []
    for name, data in (("INPUT0", a), ("INPUT1", b)):
        inp = module.InferInput(name, list(data.shape), datatype)
        if module is httpclient:
            inp.set_data_from_numpy(data, binary_data=binary_data)
        else:
            inp.set_data_from_numpy(data)
        inputs.append(inp)
    return inputs


def int_pair(batch, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(-1000, 1000, size=(batch, 16), dtype=np.int32)
    b = rng.integers(-1000, 1000, size=(batch, 16), dtype=np.int32)
    return a, b


def io_signature(metadata, key, is_http):
    """[(name, datatype, shape)] of the `inputs`/`outputs` of a model metadata response."""
    if is_http:
        return [(t["name"], t["datatype"], list(t["shape"])) for t in metadata[key]]
    return [(t.name, t.datatype, list(t.shape)) for t in getattr(metadata, key)]


def inference_stats(triton, model):
    """(success count, inference count) of a model's statistics."""
    stats = triton.client.get_inference_statistics(model)
    if triton.is_http:
        (ms,) = stats["model_stats"]
        return ms["inference_stats"]["success"]["count"], ms["inference_count"]
    (ms,) = stats.model_stats
    return ms.inference_stats.success.count, ms.inference_count


# ------------------------------------------------------- 1. health and metadata


def test_server_reports_live_and_ready(triton):
    """The liveness and readiness endpoints answer true once the server is up."""
    assert triton.client.is_server_live() is True
    assert triton.client.is_server_ready() is True


def test_loaded_model_is_ready(triton):
    """`simple` (latest version, and explicitly version 1) is ready."""
    assert triton.client.is_model_ready("simple") is True
    assert triton.client.is_model_ready("simple", "1") is True


def test_unknown_model_or_version_is_reported_not_ready(triton):
    """Readiness of a model or version that does not exist is `ready: false`,
    not an error (Triton's ModelIsReady returns success with ready=false, so
    tritonclient's is_model_ready returns False on both protocols)."""
    assert triton.client.is_model_ready("no_such_model") is False
    assert triton.client.is_model_ready("simple", "2") is False


def test_server_metadata_names_inferd_and_its_extensions(triton):
    """Server metadata carries the name `inferd` and advertises the binary tensor
    data and statistics extensions."""
    md = triton.client.get_server_metadata()
    if triton.is_http:
        name, version, extensions = md["name"], md["version"], md["extensions"]
    else:
        name, version, extensions = md.name, md.version, list(md.extensions)
    assert name == "inferd"
    assert version
    assert "binary_tensor_data" in extensions
    assert "statistics" in extensions


def test_model_metadata_of_simple_describes_batched_int32_tensors(triton):
    """Metadata lists both inputs and outputs as INT32 with shape [-1, 16]
    (the leading -1 is the batch dimension, since max_batch_size > 0)."""
    md = triton.client.get_model_metadata("simple")
    name = md["name"] if triton.is_http else md.name
    assert name == "simple"
    assert io_signature(md, "inputs", triton.is_http) == [
        ("INPUT0", "INT32", [-1, 16]),
        ("INPUT1", "INT32", [-1, 16]),
    ]
    assert io_signature(md, "outputs", triton.is_http) == [
        ("OUTPUT0", "INT32", [-1, 16]),
        ("OUTPUT1", "INT32", [-1, 16]),
    ]


def test_model_config_of_simple_has_max_batch_size_8(triton):
    """The model configuration is returned as a dict over HTTP and as a
    ModelConfigResponse protobuf (with `.config`) over gRPC."""
    cfg = triton.client.get_model_config("simple")
    if triton.is_http:
        assert isinstance(cfg, dict)
        assert cfg["name"] == "simple"
        assert cfg["max_batch_size"] == 8
        assert [(i["name"], i["data_type"], list(i["dims"])) for i in cfg["input"]] == [
            ("INPUT0", "TYPE_INT32", [16]),
            ("INPUT1", "TYPE_INT32", [16]),
        ]
    else:
        config = cfg.config
        assert config.name == "simple"
        assert config.max_batch_size == 8
        from tritonclient.grpc import model_config_pb2

        assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
            ("INPUT0", model_config_pb2.TYPE_INT32, [16]),
            ("INPUT1", model_config_pb2.TYPE_INT32, [16]),
        ]


def test_autocompleted_config_of_mlp_autoconf(triton):
    """`mlp_autoconf` has no config.pbtxt; the server derives it from the ONNX
    file (max_batch_size 4, INPUT [64] -> OUTPUT [10])."""
    cfg = triton.client.get_model_config("mlp_autoconf")
    if triton.is_http:
        mbs = cfg["max_batch_size"]
        ins = [(i["name"], list(i["dims"])) for i in cfg["input"]]
        outs = [(o["name"], list(o["dims"])) for o in cfg["output"]]
    else:
        mbs = cfg.config.max_batch_size
        ins = [(i.name, list(i.dims)) for i in cfg.config.input]
        outs = [(o.name, list(o.dims)) for o in cfg.config.output]
    assert mbs == 4
    assert ins == [("INPUT", [64])]
    assert outs == [("OUTPUT", [10])]


# ------------------------------------------------------------ 2. simple (INT32)


@pytest.mark.parametrize("batch", [1, 3])
def test_simple_infer_binary_tensors_returns_sum_and_difference(triton, batch):
    """Binary tensor data (tritonclient's default) in and out: OUTPUT0 = a + b,
    OUTPUT1 = a - b, INT32, shape [batch, 16]."""
    a, b = int_pair(batch, seed=batch)
    result = triton.client.infer("simple", simple_inputs(triton.module, a, b))
    out0, out1 = result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")
    assert out0.dtype == np.int32 and out0.shape == (batch, 16)
    assert out1.dtype == np.int32 and out1.shape == (batch, 16)
    np.testing.assert_array_equal(out0, a + b)
    np.testing.assert_array_equal(out1, a - b)


@pytest.mark.parametrize("batch", [1, 3])
def test_simple_infer_json_tensors_over_http(http_client, batch):
    """Inputs and outputs as JSON `data` arrays (no binary extension) over HTTP."""
    a, b = int_pair(batch, seed=10 + batch)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=False),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
    ]
    result = http_client.infer(
        "simple", simple_inputs(httpclient, a, b, binary_data=False), outputs=outputs
    )
    response = result.get_response()
    for out in response["outputs"]:
        assert "data" in out, f"{out['name']} was not returned as JSON data"
        assert out["datatype"] == "INT32" and out["shape"] == [batch, 16]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_simple_infer_mixes_json_inputs_with_binary_outputs_over_http(http_client):
    """JSON inputs may be combined with binary outputs in one request."""
    a, b = int_pair(2, seed=20)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
    ]
    result = http_client.infer(
        "simple", simple_inputs(httpclient, a, b, binary_data=False), outputs=outputs
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_requesting_one_output_returns_only_that_output(triton):
    """With `outputs=[OUTPUT1]` only OUTPUT1 is in the response."""
    a, b = int_pair(2, seed=30)
    result = triton.client.infer(
        "simple",
        simple_inputs(triton.module, a, b),
        outputs=[triton.module.InferRequestedOutput("OUTPUT1")],
    )
    response = result.get_response()
    names = (
        [o["name"] for o in response["outputs"]]
        if triton.is_http
        else [o.name for o in response.outputs]
    )
    assert names == ["OUTPUT1"]
    assert result.as_numpy("OUTPUT0") is None
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_request_id_is_echoed_in_the_response(triton):
    """The request id sent by the client comes back in the response."""
    a, b = int_pair(1, seed=31)
    result = triton.client.infer(
        "simple", simple_inputs(triton.module, a, b), request_id="req-42"
    )
    response = result.get_response()
    assert (response["id"] if triton.is_http else response.id) == "req-42"


# ----------------------------------------------------------- 3. simple_string


def string_pair(batch, seed):
    a, b = int_pair(batch, seed)
    to_bytes = np.vectorize(lambda v: str(v).encode(), otypes=[object])
    return a, b, to_bytes(a), to_bytes(b)


@pytest.mark.parametrize("batch", [1, 3])
def test_simple_string_infer_binary_returns_decimal_strings(triton, batch):
    """BYTES tensors (length-prefixed binary): outputs are the decimal strings of
    a + b and a - b, returned as `bytes` objects."""
    a, b, sa, sb = string_pair(batch, seed=40 + batch)
    result = triton.client.infer(
        "simple_string", simple_inputs(triton.module, sa, sb, datatype="BYTES")
    )
    out0, out1 = result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")
    assert out0.shape == (batch, 16) and out1.shape == (batch, 16)
    assert out0.tolist() == [[str(v).encode() for v in row] for row in a + b]
    assert out1.tolist() == [[str(v).encode() for v in row] for row in a - b]


@pytest.mark.parametrize("batch", [1, 3])
def test_simple_string_infer_json_over_http(http_client, batch):
    """BYTES tensors as JSON strings: tritonclient decodes JSON outputs to `str`."""
    a, b, sa, sb = string_pair(batch, seed=50 + batch)
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=False),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
    ]
    result = http_client.infer(
        "simple_string",
        simple_inputs(httpclient, sa, sb, binary_data=False, datatype="BYTES"),
        outputs=outputs,
    )
    out0, out1 = result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")
    assert out0.shape == (batch, 16) and out1.shape == (batch, 16)
    assert out0.tolist() == [[str(v) for v in row] for row in a + b]
    assert out1.tolist() == [[str(v) for v in row] for row in a - b]


# --------------------------------------------------------------------- 4. mlp


def mlp_input(module, x):
    inp = module.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def test_mlp_batch_of_five_matches_numpy_reference(triton, mlp_reference):
    """A batch of 5 random rows gives the logits of the numpy reference MLP."""
    x = np.random.default_rng(1).standard_normal((5, 64)).astype(np.float32)
    result = triton.client.infer("mlp", [mlp_input(triton.module, x)])
    y = result.as_numpy("OUTPUT")
    assert y.dtype == np.float32 and y.shape == (5, 10)
    np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-5, atol=1e-5)


def test_mlp_with_explicitly_requested_output(triton, mlp_reference):
    """Requesting `OUTPUT` explicitly gives the same logits."""
    x = np.random.default_rng(2).standard_normal((5, 64)).astype(np.float32)
    result = triton.client.infer(
        "mlp",
        [mlp_input(triton.module, x)],
        outputs=[triton.module.InferRequestedOutput("OUTPUT")],
    )
    np.testing.assert_allclose(
        result.as_numpy("OUTPUT"), mlp_reference(x), rtol=1e-5, atol=1e-5
    )


def test_mlp_classification_gives_the_top_classes_of_each_row(triton):
    """`class_count` (Triton's classification extension) answers each row's top classes as
    "score:index" strings, highest first, the same over both protocols."""
    x = np.random.default_rng(3).standard_normal((2, 64)).astype(np.float32)
    scores = triton.client.infer("mlp", [mlp_input(triton.module, x)]).as_numpy("OUTPUT")
    result = triton.client.infer(
        "mlp",
        [mlp_input(triton.module, x)],
        outputs=[triton.module.InferRequestedOutput("OUTPUT", class_count=3)],
    )
    classes = result.as_numpy("OUTPUT")
    assert classes.shape == (2, 3)
    for row, top in zip(scores, classes):
        expected = [f"{row[i]:.6f}:{i}" for i in np.argsort(-row, kind="stable")[:3]]
        assert [c.decode() for c in top] == expected


def test_mlp_autoconf_matches_numpy_reference(triton, mlp_reference):
    """The auto-configured copy of the MLP computes the same function."""
    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    result = triton.client.infer("mlp_autoconf", [mlp_input(triton.module, x)])
    np.testing.assert_allclose(
        result.as_numpy("OUTPUT"), mlp_reference(x), rtol=1e-5, atol=1e-5
    )


# ------------------------------------------------------- 5. identity_<type>

IDENTITY_TYPES = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "BF16", "FP32", "FP64", "BYTES",
]
NUMPY_DTYPE = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}


def identity_model(datatype):
    return "identity_string" if datatype == "BYTES" else f"identity_{datatype.lower()}"


def identity_sample(datatype, json_safe=False):
    """A [2, 5] tensor exercising the edges of `datatype` (extremes, signed zero,
    infinities, NaN, subnormals, unicode). `json_safe` leaves out the values that
    JSON cannot represent (non-finite floats)."""
    if datatype == "BOOL":
        return np.array([[True, False, True, True, False], [False] * 4 + [True]])
    if datatype == "BYTES":
        words = ["", "a", "héllo", "0", "with space", "日本語", "-1", "tab\t", "x" * 300, "€"]
        return np.array([w.encode() for w in words], dtype=object).reshape(2, 5)
    if datatype in ("FP16", "FP32", "FP64", "BF16"):
        dt = np.float32 if datatype == "BF16" else NUMPY_DTYPE[datatype]
        fi = np.finfo(dt)
        values = [0.0, -0.0, 1.5, -2.25, fi.max, fi.min, fi.tiny, fi.smallest_subnormal]
        values += [0.1, 3.0] if json_safe else [np.inf, np.nan]
        x = np.array(values, dtype=dt)
        if datatype == "BF16":
            # keep only the high 16 bits so every value is exactly representable
            x = (x.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
        return x.reshape(2, 5)
    dt = NUMPY_DTYPE[datatype]
    ii = np.iinfo(dt)
    values = [ii.min, ii.max, 0, 1, 2, ii.max - 1, 42, 7, ii.min + 1, ii.max // 2]
    return np.array(values, dtype=dt).reshape(2, 5)


def assert_identical(out, x, datatype):
    assert out is not None, "OUTPUT0 missing from the response"
    assert out.shape == x.shape
    if datatype == "BYTES":
        assert out.tolist() == x.tolist()
    else:
        assert out.dtype == x.dtype
        # compare bit patterns: exact, and NaN-/signed-zero-aware
        assert out.tobytes() == x.tobytes(), f"{out!r} != {x!r}"


@pytest.mark.parametrize("datatype", IDENTITY_TYPES)
def test_identity_model_round_trips_binary_tensor_exactly(triton, datatype):
    """identity_<type> returns the input bit-for-bit, for every datatype.
    (BF16 goes through tritonclient's float32 <-> bfloat16 conversion.)"""
    x = identity_sample(datatype)
    inp = triton.module.InferInput("INPUT0", list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    result = triton.client.infer(identity_model(datatype), [inp])
    out_md = result.get_output("OUTPUT0")
    assert (out_md["datatype"] if triton.is_http else out_md.datatype) == datatype
    assert_identical(result.as_numpy("OUTPUT0"), x, datatype)


@pytest.mark.parametrize("datatype", [t for t in IDENTITY_TYPES if t != "BF16"])
def test_identity_model_round_trips_json_tensor_exactly_over_http(http_client, datatype):
    """The same round trip with JSON tensors over HTTP (finite values only: JSON
    has no NaN/Infinity; BF16 is excluded because tritonclient only sends BF16 as
    binary data, see the next test)."""
    x = identity_sample(datatype, json_safe=True)
    inp = httpclient.InferInput("INPUT0", list(x.shape), datatype)
    inp.set_data_from_numpy(x, binary_data=False)
    result = http_client.infer(
        identity_model(datatype),
        [inp],
        outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)],
    )
    out = result.as_numpy("OUTPUT0")
    if datatype == "BYTES":  # JSON strings come back as str
        assert out.tolist() == [[w.decode() for w in row] for row in x.tolist()]
    else:
        assert_identical(out, x, datatype)


def test_tritonclient_refuses_bf16_as_json(http_client):
    """Documents why BF16 has no JSON round-trip test: tritonclient 2.50 raises
    client-side before anything is sent."""
    inp = httpclient.InferInput("INPUT0", [1, 2], "BF16")
    with pytest.raises(InferenceServerException, match="binary"):
        inp.set_data_from_numpy(np.ones((1, 2), np.float32), binary_data=False)


# ------------------------------------------------------------------ 6-7. errors


def test_infer_on_unknown_model_is_not_found(triton):
    """Inference on a model that does not exist fails with NOT_FOUND (HTTP 404)
    and Triton's message "Request for unknown model"."""
    a, b = int_pair(1, seed=60)
    with pytest.raises(InferenceServerException) as excinfo:
        triton.client.infer("no_such_model", simple_inputs(triton.module, a, b))
    assert "Request for unknown model" in excinfo.value.message()
    assert excinfo.value.status() == NOT_FOUND[triton.protocol]


def test_infer_with_wrong_shape_names_the_offending_input(triton):
    """INPUT0 with 15 elements per row instead of 16 is rejected as an invalid
    argument whose message names 'INPUT0'."""
    a = np.zeros((1, 15), np.int32)
    b = np.zeros((1, 16), np.int32)
    with pytest.raises(InferenceServerException) as excinfo:
        triton.client.infer("simple", simple_inputs(triton.module, a, b))
    assert "INPUT0" in excinfo.value.message()
    assert excinfo.value.status() == INVALID_ARGUMENT[triton.protocol]


def test_infer_with_wrong_datatype_names_the_offending_input(triton):
    """INPUT0 sent as FP32 to an INT32 input is rejected as an invalid argument
    whose message names 'INPUT0'."""
    inputs = simple_inputs(triton.module, *int_pair(1, seed=61))
    bad = triton.module.InferInput("INPUT0", [1, 16], "FP32")
    bad.set_data_from_numpy(np.ones((1, 16), np.float32))
    with pytest.raises(InferenceServerException) as excinfo:
        triton.client.infer("simple", [bad, inputs[1]])
    assert "INPUT0" in excinfo.value.message()
    assert excinfo.value.status() == INVALID_ARGUMENT[triton.protocol]


def test_batch_larger_than_max_batch_size_is_rejected(triton):
    """A batch of 9 on `simple` (max_batch_size 8) is an invalid argument."""
    a, b = int_pair(9, seed=62)
    with pytest.raises(InferenceServerException) as excinfo:
        triton.client.infer("simple", simple_inputs(triton.module, a, b))
    assert excinfo.value.status() == INVALID_ARGUMENT[triton.protocol]


def test_autocompleted_max_batch_size_is_enforced(triton):
    """`mlp_autoconf` accepts a batch of 4 (see above) but rejects a batch of 5."""
    x = np.zeros((5, 64), np.float32)
    with pytest.raises(InferenceServerException) as excinfo:
        triton.client.infer("mlp_autoconf", [mlp_input(triton.module, x)])
    assert excinfo.value.status() == INVALID_ARGUMENT[triton.protocol]


# ------------------------------------------------------------- 8. statistics


def test_statistics_count_each_successful_request(triton):
    """After N successful requests the success count grows by exactly N and the
    inference count by the total number of batch items."""
    batches = [1, 3, 2, 1]
    before_success, before_items = inference_stats(triton, "simple")
    for i, batch in enumerate(batches):
        a, b = int_pair(batch, seed=70 + i)
        result = triton.client.infer("simple", simple_inputs(triton.module, a, b))
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    after_success, after_items = inference_stats(triton, "simple")
    assert after_success - before_success == len(batches)
    assert after_items - before_items == sum(batches)


# ------------------------------------------------------- 9. gRPC streaming


def test_grpc_stream_returns_every_result_with_its_request_id(grpc_client):
    """10 requests on one bidirectional stream: every response arrives, carries
    the id of its request and the right values."""
    responses = queue.Queue()

    def callback(sink, result, error):
        sink.put((result, error))

    sent = {}
    grpc_client.start_stream(callback=partial(callback, responses))
    try:
        for i in range(10):
            a, b = int_pair(1 + i % 3, seed=80 + i)
            sent[f"stream-{i}"] = (a, b)
            grpc_client.async_stream_infer(
                "simple", simple_inputs(grpcclient, a, b), request_id=f"stream-{i}"
            )
        received = {}
        for _ in range(10):
            result, error = responses.get(timeout=10)
            assert error is None, error
            rid = result.get_response().id
            assert rid in sent and rid not in received, rid
            received[rid] = result
    finally:
        grpc_client.stop_stream()
    assert sorted(received) == sorted(sent)
    for rid, result in received.items():
        a, b = sent[rid]
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


# ---------------------------------------------------- 10. HTTP async_infer


def test_http_async_infer_of_20_concurrent_mlp_requests(inferd, mlp_reference):
    """20 async requests with 4 concurrent connections: each result matches the
    reference for its own input."""
    client = httpclient.InferenceServerClient(url=inferd.http_url, concurrency=4)
    try:
        rng = np.random.default_rng(90)
        xs = [
            rng.standard_normal((1 + i % 5, 64)).astype(np.float32) for i in range(20)
        ]
        pending = [
            client.async_infer("mlp", [mlp_input(httpclient, x)], request_id=str(i))
            for i, x in enumerate(xs)
        ]
        for i, (x, req) in enumerate(zip(xs, pending)):
            result = req.get_result(timeout=30)
            assert result.get_response()["id"] == str(i)
            y = result.as_numpy("OUTPUT")
            assert y.shape == (x.shape[0], 10)
            np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-5, atol=1e-5)
    finally:
        client.close()
