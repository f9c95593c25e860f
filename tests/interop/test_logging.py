"""Triton's logging extension with tritonclient over both protocols: get_log_settings / update_log_settings,
typed refusals, and a check that a change really changes what the server logs. Runs its own server, so the
changes leave the shared one alone."""

import time

import pytest
from tritonclient.utils import InferenceServerException

from conftest import _serve

DEFAULTS = {
    "log_file": "",
    "log_info": True,
    "log_warning": True,
    "log_error": True,
    "log_verbose_level": 0,
    "log_format": "default",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from _serve(tmp_path_factory, "inferd-logging")


@pytest.fixture(params=("http", "grpc"))
def client(request, server):
    if request.param == "http":
        import tritonclient.http as module

        c = module.InferenceServerClient(url=server.http_url)
    else:
        import tritonclient.grpc as module

        c = module.InferenceServerClient(url=server.grpc_url)
    c.update_log_settings(DEFAULTS | {"log_file": ""})
    yield request.param, module, c
    c.update_log_settings({k: v for k, v in DEFAULTS.items() if k != "log_file"})
    c.close()


def _settings(protocol, answer):
    if protocol == "http":
        return answer
    # gRPC answers {"settings": {name: {"boolParam"|"uint32Param"|"stringParam": value}}} as JSON.
    out = {}
    for name, value in answer["settings"].items():
        (v,) = value.values()
        out[name] = int(v) if name == "log_verbose_level" else v
    return out


def _get(protocol, c):
    answer = c.get_log_settings(as_json=True) if protocol == "grpc" else c.get_log_settings()
    return _settings(protocol, answer)


def _update(protocol, c, settings):
    answer = c.update_log_settings(settings, as_json=True) if protocol == "grpc" else c.update_log_settings(settings)
    return _settings(protocol, answer)


def test_settings_read_as_tritons_defaults(client):
    protocol, _, c = client
    assert _get(protocol, c) == DEFAULTS


def test_an_update_returns_every_setting_and_sticks(client):
    protocol, _, c = client
    after = _update(protocol, c, {"log_verbose_level": 2, "log_warning": False, "log_format": "ISO8601"})
    assert after == DEFAULTS | {"log_verbose_level": 2, "log_warning": False, "log_format": "ISO8601"}
    assert _get(protocol, c) == after


@pytest.mark.parametrize(
    "settings,wording",
    [
        ({"log_info": "yes"}, "expect boolean for 'log_info'"),
        ({"log_format": "xml"}, "invalid argument for log_format, got: xml"),
        ({"log_file": "/tmp/inferd.log"}, "log file location can not be updated through network protocol"),
        ({"log_colour": True}, "unknown log setting 'log_colour'"),
    ],
)
def test_a_bad_setting_is_refused_with_tritons_wording_and_changes_nothing(client, settings, wording):
    protocol, _, c = client
    if protocol == "grpc" and settings == {"log_info": "yes"}:
        # tritonclient's gRPC client types each value by its key; the raw-stub test below sends this one.
        settings = {"log_info": None}
    with pytest.raises(InferenceServerException) as e:
        c.update_log_settings(settings | {"log_verbose_level": 3})
    assert wording in str(e.value)
    if protocol == "http":
        assert e.value.status() == "400"
    else:
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert _get(protocol, c)["log_verbose_level"] == 0


def test_a_grpc_setting_of_the_wrong_type_is_invalid_argument(server):
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.LogSettingsRequest()
        request.settings["log_verbose_level"].string_param = "1"
        with pytest.raises(grpc.RpcError) as e:
            stub.LogSettings(request)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "expect int32 for 'log_verbose_level'" in e.value.details()
        answer = stub.LogSettings(service_pb2.LogSettingsRequest())
        assert answer.settings["log_verbose_level"].uint32_param == 0


def _log_has(server, needle, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in server.log_path.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def _fail_request(module, c, request_id):
    """A request the server refuses as a client's mistake (an unknown version): one INFO line."""
    import numpy as np

    inp = module.InferInput("INPUT0", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[b"x"]], dtype=np.object_))
    with pytest.raises(InferenceServerException):
        c.infer("simple_identity", [inp], model_version="9", request_id=request_id)


def _serve_request(module, c, request_id):
    """A request served: one DEBUG line at verbose level 1 and above."""
    import numpy as np

    inp = module.InferInput("INPUT0", [1, 1], "BYTES")
    inp.set_data_from_numpy(np.array([[b"x"]], dtype=np.object_))
    c.infer("simple_identity", [inp], request_id=request_id)


def test_changes_change_what_the_server_logs(client, server):
    protocol, module, c = client
    tag = f"{protocol}-{time.monotonic_ns()}"
    _serve_request(module, c, f"{tag}-quiet-served")
    _update(protocol, c, {"log_verbose_level": 1})
    _serve_request(module, c, f"{tag}-verbose-served")
    assert _log_has(server, f"{tag}-verbose-served")
    _update(protocol, c, {"log_info": False, "log_verbose_level": 0})
    _fail_request(module, c, f"{tag}-quiet-failed")
    _update(protocol, c, {"log_info": True})
    _fail_request(module, c, f"{tag}-loud-failed")
    assert _log_has(server, f"{tag}-loud-failed")
    text = server.log_path.read_text(errors="replace")
    assert f"{tag}-quiet-served" not in text
    assert f"{tag}-quiet-failed" not in text


def test_server_metadata_lists_the_logging_extension(client):
    protocol, _, c = client
    meta = c.get_server_metadata()
    extensions = meta["extensions"] if protocol == "http" else list(meta.extensions)
    assert "logging" in extensions
