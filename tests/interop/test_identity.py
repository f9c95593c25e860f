"""tritonclient against the identity backend (`simple_identity`) and Triton's `simple_int8`, over both
protocols: BYTES come back exactly as sent (NUL and non-UTF-8 bytes included), INT8 sums wrap as int8 does."""

import numpy as np
import pytest


def _identity(triton, data, binary=True):
    inp = triton.module.InferInput("INPUT0", list(data.shape), "BYTES")
    if triton.is_http:
        inp.set_data_from_numpy(data, binary_data=binary)
        out = triton.module.InferRequestedOutput("OUTPUT0", binary_data=binary)
    else:
        inp.set_data_from_numpy(data)
        out = triton.module.InferRequestedOutput("OUTPUT0")
    return triton.client.infer("simple_identity", [inp], outputs=[out]).as_numpy("OUTPUT0")


def test_bytes_with_nul_and_non_utf8_bytes_round_trip_exactly(triton):
    data = np.array(
        [[b"he\x00llo", b"", b"\x00", b"\xff\xfe\x00\x01"], [b"a" * 1000, b"\x00" * 7, b"z", b"\x80"]],
        dtype=np.object_,
    )
    got = _identity(triton, data)
    assert got.shape == data.shape
    assert [bytes(x) for x in got.ravel()] == [bytes(x) for x in data.ravel()]


def test_fixed_size_byte_blobs_round_trip_as_tritons_example_sends_them(triton):
    data = np.array([b"\x00\x01\x02\x03"] * 16, dtype=np.bytes_).reshape([1, 16])
    got = _identity(triton, data)
    assert [bytes(x) for x in got.ravel()] == [b"\x00\x01\x02\x03"] * 16


def test_json_bytes_with_a_nul_character_round_trip_over_rest(http_client):
    import tritonclient.http as httpclient

    data = np.array([["he\x00llo".encode(), "ünï".encode()]], dtype=np.object_)
    inp = httpclient.InferInput("INPUT0", [1, 2], "BYTES")
    inp.set_data_from_numpy(data, binary_data=False)
    out = httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)
    got = http_client.infer("simple_identity", [inp], outputs=[out]).as_numpy("OUTPUT0")
    assert [x if isinstance(x, bytes) else str(x).encode() for x in got.ravel()] == list(data.ravel())


def test_simple_identity_reports_the_identity_backend(triton):
    cfg = triton.client.get_model_config("simple_identity")
    if not triton.is_http:
        from google.protobuf import json_format

        cfg = json_format.MessageToDict(cfg.config, preserving_proto_field_name=True)
    assert cfg["backend"] == "identity"
    assert cfg["input"][0]["data_type"] == "TYPE_STRING"


def test_simple_int8_sums_and_differences_wrap_around(triton):
    a = np.arange(-8, 8, dtype=np.int8).reshape(1, 16) * 16
    a[0, 15] = 127
    b = np.ones((1, 16), dtype=np.int8)
    inputs = [
        triton.module.InferInput("INPUT0", [1, 16], "INT8"),
        triton.module.InferInput("INPUT1", [1, 16], "INT8"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = triton.client.infer("simple_int8", inputs)
    s, d = result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")
    assert s.dtype == np.int8 and d.dtype == np.int8
    np.testing.assert_array_equal(s, (a.astype(np.int16) + 1).astype(np.int8))
    np.testing.assert_array_equal(d, a - b)
    assert s[0, 15] == -128


def test_a_version_that_is_neither_a_number_nor_a_label_gets_tritons_wording(triton):
    from tritonclient.utils import InferenceServerException

    inp = triton.module.InferInput("INPUT0", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[b"x"]], dtype=np.object_))
    with pytest.raises(InferenceServerException) as e:
        triton.client.infer("simple_identity", [inp], model_version="wrong_specification")
    assert "failed to get model version from specified version string 'wrong_specification'" in str(e.value)
