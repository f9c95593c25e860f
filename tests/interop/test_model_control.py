"""Triton's model-control client calls (repository index, load, unload) behave against inferd as against
Triton, over HTTP and gRPC."""

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


@pytest.fixture(params=["http", "grpc"])
def client(request, inferd_explicit):
    if request.param == "http":
        c = httpclient.InferenceServerClient(url=inferd_explicit.http_url)
    else:
        c = grpcclient.InferenceServerClient(url=inferd_explicit.grpc_url)
    yield request.param, c
    c.close()


def _index(protocol, c, ready=False):
    index = c.get_model_repository_index(**({"as_json": True} if protocol == "grpc" else {}))
    if protocol == "grpc":
        index = index.get("models", [])
    entries = {(m["name"], m.get("version", ""), m.get("state", "")) for m in index}
    return {e for e in entries if not ready or e[2] == "READY"}


def _infer_mlp(protocol, c):
    mod = httpclient if protocol == "http" else grpcclient
    x = np.ones((2, 64), dtype=np.float32)
    inp = mod.InferInput("INPUT", [2, 64], "FP32")
    inp.set_data_from_numpy(x)
    return c.infer("mlp", [inp]).as_numpy("OUTPUT")


def test_load_infer_unload_cycle_behaves_as_against_triton(client):
    protocol, c = client
    assert ("simple", "1", "READY") in _index(protocol, c)
    assert not c.is_model_ready("mlp")
    c.load_model("mlp")
    assert c.is_model_ready("mlp")
    assert ("mlp", "1", "READY") in _index(protocol, c)
    assert _infer_mlp(protocol, c).shape == (2, 10)
    c.unload_model("mlp")
    assert not c.is_model_ready("mlp")
    with pytest.raises(InferenceServerException, match="Request for unknown model"):
        _infer_mlp(protocol, c)


def test_load_with_a_config_override(client):
    protocol, c = client
    config = json.dumps({"max_batch_size": 1, "platform": "onnxruntime_onnx"})
    c.load_model("mlp", config=config)
    try:
        cfg = c.get_model_config("mlp")
        max_batch = cfg["max_batch_size"] if protocol == "http" else cfg.config.max_batch_size
        assert max_batch == 1
        with pytest.raises(InferenceServerException, match="batch-size must be <= 1"):
            _infer_mlp(protocol, c)
    finally:
        c.unload_model("mlp")


def test_loading_an_unknown_model_raises(client):
    _, c = client
    with pytest.raises(InferenceServerException, match="ghost"):
        c.load_model("ghost")


def test_load_with_model_files_sent_by_the_client(client):
    protocol, c = client
    from pathlib import Path

    onnx = (Path(__file__).resolve().parents[2] / "models" / "simple" / "1" / "model.onnx").read_bytes()
    config = json.dumps({"name": "uploaded", "platform": "onnxruntime_onnx", "max_batch_size": 8})
    c.load_model("uploaded", config=config, files={"file:2/model.onnx": onnx})
    try:
        assert c.is_model_ready("uploaded", "2")
        mod = httpclient if protocol == "http" else grpcclient
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        inputs = [mod.InferInput(n, [1, 16], "INT32") for n in ("INPUT0", "INPUT1")]
        for i in inputs:
            i.set_data_from_numpy(a)
        out = c.infer("uploaded", inputs).as_numpy("OUTPUT0")
        assert (out == 2 * a).all()
    finally:
        c.unload_model("uploaded")
