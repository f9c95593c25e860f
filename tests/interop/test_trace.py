"""Triton's trace extension in OpenTelemetry mode: inferd started with `--trace-config` pointing at a real OTLP/HTTP
receiver (tests/interop/otlp_receiver.py, on the official opentelemetry-proto messages), traced requests over
both protocols, the caller's W3C trace context, sampling by rate and count, and the settings read and changed at
run time through tritonclient's `get_trace_settings` / `update_trace_settings`.
"""

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import DEFAULT_BIN, _start_server, _stop
from otlp_receiver import OtlpReceiver

SERVICE = "inferd-trace-test"
# Long enough for the batch span processor (50 ms delay here) to have sent anything it was going to send.
QUIET_S = 0.6


@pytest.fixture(scope="module")
def receiver():
    r = OtlpReceiver()
    yield r
    r.close()


def _start(tmp_path_factory, name, receiver, extra=()):
    binary = Path(os.environ.get("INFERD_BIN", DEFAULT_BIN))
    if not binary.is_file():
        pytest.fail(f"server binary not found at {binary}: run `cargo build --bin inferd`")
    args = (
        "--trace-config", "mode=opentelemetry",
        "--trace-config", f"opentelemetry,url={receiver.url}",
        "--trace-config", "rate=1",
        "--trace-config", "level=TIMESTAMPS",
        "--trace-config", f"opentelemetry,resource=service.name={SERVICE}",
        "--trace-config", "opentelemetry,bsp_schedule_delay=50",
        *extra,
    )
    log_dir = tmp_path_factory.mktemp(name)
    for attempt in range(3):
        server, last = _start_server(binary, log_dir / f"inferd-{attempt}.log", args, repositories=("models",))
        if server is not None:
            return server
    pytest.fail(f"inferd exited before becoming ready; log tail:\n{last.log_tail()}")


@pytest.fixture(scope="module")
def server(tmp_path_factory, receiver):
    s = _start(tmp_path_factory, "inferd-trace", receiver)
    yield s
    _stop(s.process)


@pytest.fixture(params=["http", "grpc"])
def client(request, server, receiver):
    if request.param == "http":
        c = httpclient.InferenceServerClient(url=server.http_url)
        c.module = httpclient
    else:
        c = grpcclient.InferenceServerClient(url=server.grpc_url)
        c.module = grpcclient
    c.protocol = request.param
    # Every test starts from the command line's settings, with no model overrides and nothing received.
    c.update_trace_settings(settings={"trace_level": None, "trace_rate": None, "trace_count": None})
    for model in ("simple", "mlp"):
        c.update_trace_settings(model_name=model, settings={})
    receiver.wait_for(lambda s: False, timeout=QUIET_S)
    receiver.clear()
    yield c
    c.close()


def infer(client, request_id="", headers=None, model="simple"):
    m = client.module
    if model == "simple":
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        inputs = [m.InferInput("INPUT0", [1, 16], "INT32"), m.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(np.ones_like(a))
    else:
        x = np.zeros((1, 64), dtype=np.float32)
        inputs = [m.InferInput("INPUT", list(x.shape), "FP32")]
        inputs[0].set_data_from_numpy(x)
    result = client.infer(model, inputs, request_id=request_id, headers=headers)
    if model == "simple":
        assert (result.as_numpy("OUTPUT0") == a + 1).all()


def requests_of(spans):
    return [s for s in spans if s.name == "InferRequest"]


def settings_of(client, model=None):
    """The settings as {key: value}, the same from either protocol (lists for trace_level)."""
    if client.protocol == "http":
        return client.get_trace_settings(model_name=model)
    got = client.get_trace_settings(model_name=model, as_json=True)["settings"]
    return {k: (v["value"] if k == "trace_level" else v["value"][0]) for k, v in got.items()}


def trace_of(spans, request):
    return {s.name: s for s in spans if s.trace_id == request.trace_id}


def test_the_server_lists_the_trace_extension(server):
    c = httpclient.InferenceServerClient(url=server.http_url)
    assert "trace" in c.get_server_metadata()["extensions"]


def test_settings_read_as_triton_lists_them_in_opentelemetry_mode(client, receiver):
    assert settings_of(client) == {
        "trace_level": ["TIMESTAMPS"],
        "trace_rate": "1",
        "trace_count": "-1",
        "trace_mode": "opentelemetry",
        "url": receiver.url,
    }


def test_a_request_is_traced_with_queue_compute_and_response_spans(client, receiver):
    before_ns = time.time_ns()
    infer(client, request_id=f"traced-{client.protocol}")
    after_ns = time.time_ns()
    spans = receiver.wait_for(lambda s: len(s) >= 4)
    assert len(requests_of(spans)) == 1, spans
    request = requests_of(spans)[0]
    trace = trace_of(spans, request)
    assert set(trace) == {"InferRequest", "queue", "compute", "response"}, spans
    assert len(spans) == 4

    assert request.is_server
    assert request.parent_span_id == ""
    assert request.attributes == {
        "model_name": "simple",
        "model_version": "1",
        "request_id": f"traced-{client.protocol}",
        "protocol": client.protocol,
    }
    assert request.resource["service.name"] == SERVICE
    assert request.status_code == 0, request.status_message
    for name in ("queue", "compute", "response"):
        assert trace[name].parent_span_id == request.span_id, name
        assert trace[name].trace_id == request.trace_id

    # Wall-clock times within the call, in the order a request lives them.
    queue, compute, response = trace["queue"], trace["compute"], trace["response"]
    assert before_ns <= request.start_ns <= queue.start_ns
    assert queue.end_ns == compute.start_ns
    assert compute.start_ns < compute.end_ns <= response.start_ns <= response.end_ns
    assert response.end_ns <= request.end_ns <= after_ns
    assert request.end_ns - request.start_ns < 5e9
    # Triton's timestamp names, as events of the request span.
    events = request.events
    assert events["REQUEST_START"] == request.start_ns
    assert events["QUEUE_START"] == queue.start_ns
    assert (events["COMPUTE_START"], events["COMPUTE_END"]) == (compute.start_ns, compute.end_ns)
    assert events["REQUEST_END"] == response.start_ns


def test_a_callers_traceparent_continues_through_inferd(client, receiver):
    trace_id = os.urandom(16).hex()
    parent = os.urandom(8).hex()
    infer(client, headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    spans = receiver.wait_for(lambda s: len(s) >= 4)
    request = requests_of(spans)[0]
    assert request.trace_id == trace_id
    assert request.parent_span_id == parent
    assert {s.trace_id for s in spans} == {trace_id}
    assert request.span_id != parent


def test_a_malformed_traceparent_starts_a_trace_of_its_own(client, receiver):
    infer(client, headers={"traceparent": "00-not-a-trace-01"})
    spans = receiver.wait_for(lambda s: len(s) >= 4)
    request = requests_of(spans)[0]
    assert request.parent_span_id == ""
    assert len(request.trace_id) == 32 and request.trace_id != "0" * 32


def test_rate_2_traces_every_second_request(client, receiver):
    settings = client.update_trace_settings(settings={"trace_rate": "2"})
    if client.protocol == "grpc":
        settings = {k: v for k, v in settings.settings.items()}
        assert list(settings["trace_rate"].value) == ["2"]
    else:
        assert settings["trace_rate"] == "2"
    for i in range(6):
        infer(client, request_id=f"r{i}")
    spans = receiver.wait_for(lambda s: len(requests_of(s)) >= 3)
    time.sleep(QUIET_S)
    ids = sorted(s.attributes["request_id"] for s in requests_of(receiver.spans()))
    assert ids == ["r1", "r3", "r5"], ids


def test_trace_count_stops_tracing_and_shows_what_is_left(client, receiver):
    client.update_trace_settings(settings={"trace_count": "2"})
    for i in range(4):
        infer(client, request_id=f"c{i}")
    receiver.wait_for(lambda s: len(requests_of(s)) >= 2)
    time.sleep(QUIET_S)
    assert sorted(s.attributes["request_id"] for s in requests_of(receiver.spans())) == ["c0", "c1"]
    assert settings_of(client)["trace_count"] == "0"


def test_level_off_exports_nothing(client, receiver):
    client.update_trace_settings(settings={"trace_level": ["OFF"]})
    assert settings_of(client)["trace_level"] == ["OFF"]
    for i in range(4):
        infer(client)
    infer(client, headers={"traceparent": f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"})
    time.sleep(QUIET_S)
    assert receiver.spans() == []
    # And back on at once.
    client.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]})
    infer(client)
    assert len(requests_of(receiver.wait_for(lambda s: len(s) >= 4))) == 1


def test_a_model_setting_overrides_the_global_one_until_cleared(client, receiver):
    client.update_trace_settings(settings={"trace_level": ["OFF"]})
    client.update_trace_settings(model_name="simple", settings={"trace_level": ["TIMESTAMPS"]})
    assert settings_of(client, "simple")["trace_level"] == ["TIMESTAMPS"]
    assert settings_of(client, "simple")["trace_rate"] == "1", "what the model does not set is the global one"
    assert settings_of(client)["trace_level"] == ["OFF"]
    infer(client, model="simple", request_id="on")
    infer(client, model="mlp", request_id="off")
    receiver.wait_for(lambda s: len(requests_of(s)) >= 1)
    time.sleep(QUIET_S)
    assert [s.attributes["model_name"] for s in requests_of(receiver.spans())] == ["simple"]

    # A null clears the model's own value: it follows the global OFF again.
    client.update_trace_settings(model_name="simple", settings={"trace_level": None})
    assert settings_of(client, "simple")["trace_level"] == ["OFF"]
    receiver.clear()
    infer(client, model="simple")
    time.sleep(QUIET_S)
    assert receiver.spans() == []


@pytest.mark.parametrize(
    "settings,says",
    [
        ({"trace_rate": "often"}, "Unable to parse 'trace_rate'"),
        ({"trace_count": "-7"}, "Expecting value >= -1"),
        ({"trace_level": ["LOUD"]}, "unknown trace level 'LOUD'"),
        ({"trace_level": ["OFF", "TIMESTAMPS"]}, "Expect only one trace level 'OFF'"),
        ({"trace_level": ["TENSORS"]}, "not supported in opentelemetry"),
        ({"trace_file": "/tmp/trace.json"}, "trace file location can not be updated through network protocol"),
        ({"trace_sample": "1"}, "unknown trace setting 'trace_sample'"),
        ({"url": "http://elsewhere:4318/v1/traces"}, "can only be set at start"),
    ],
)
def test_bad_settings_are_refused_and_change_nothing(client, settings, says):
    before = settings_of(client)
    with pytest.raises(InferenceServerException) as e:
        client.update_trace_settings(settings=settings)
    assert says in e.value.message()
    expected = "400" if client.protocol == "http" else "StatusCode.INVALID_ARGUMENT"
    assert e.value.status() == expected
    assert settings_of(client) == before


def test_settings_of_an_unknown_model_are_refused(client):
    with pytest.raises(InferenceServerException) as e:
        client.get_trace_settings(model_name="no_such_model")
    assert "Request for unknown model : no_such_model" in e.value.message()


def _post(url, body, token=None):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_with_an_admin_token_changing_settings_needs_it(tmp_path_factory, receiver):
    s = _start(tmp_path_factory, "inferd-trace-admin", receiver, ("--admin-token", "s3cret"))
    try:
        url = f"http://{s.http_url}/v2/trace/setting"
        status, body = _post(url, {"trace_rate": "5"})
        assert status == 401, body
        assert "admin token" in body["error"]
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert json.loads(resp.read())["trace_rate"] == "1", "reading needs no token"
        status, body = _post(url, {"trace_rate": "5"}, token="s3cret")
        assert (status, body["trace_rate"]) == (200, "5")

        g = grpcclient.InferenceServerClient(url=s.grpc_url)
        with pytest.raises(InferenceServerException) as e:
            g.update_trace_settings(settings={"trace_rate": "6"})
        assert e.value.status() == "StatusCode.UNAUTHENTICATED"
        updated = g.update_trace_settings(settings={"trace_rate": "6"}, headers={"authorization": "Bearer s3cret"})
        assert list(updated.settings["trace_rate"].value) == ["6"]
        g.close()
    finally:
        _stop(s.process)


def test_spans_still_queued_are_sent_when_the_server_stops(tmp_path_factory, receiver):
    # A schedule delay far longer than the test: only the shutdown's flush can send the spans.
    s = _start(
        tmp_path_factory, "inferd-trace-stop", receiver, ("--trace-config", "opentelemetry,bsp_schedule_delay=600000")
    )
    try:
        c = httpclient.InferenceServerClient(url=s.http_url)
        c.module = httpclient
        receiver.clear()
        infer(c, request_id="last-words")
        time.sleep(QUIET_S)
        assert receiver.spans() == [], "the batch is held until the delay or the shutdown"
    finally:
        _stop(s.process)
    assert s.process.returncode == 0
    spans = receiver.wait_for(lambda sp: len(sp) >= 4, timeout=5)
    assert [r.attributes["request_id"] for r in requests_of(spans)] == ["last-words"]
