"""Validation at the door (issue 15), through Triton's own clients over both protocols.

A model's config declares value rules per input in `parameters`: `validate.<INPUT>.min`, `.max`, `.allow_nan`
(default true), and `validate.mode` `reject` (the default) or `flag`.

- reject: a request with a value that breaks a rule is refused before it is queued (HTTP 400, gRPC
  INVALID_ARGUMENT) with a message naming the input, the model, the feature (the element's index within its
  row), the value and the rule; requests within the rules (bounds included) are served.
- flag: the same requests are served as ever, each counted once in
  `inferd_validation_failures_total{model,version,input,rule}` (rule = min | max | allow_nan) and logged with
  the request's id.

The server is started here on free ports with a temporary repository holding two copies of mlp, one per mode.
"""

import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import REPO_ROOT
from stores import Inferd

MLP = REPO_ROOT / "models" / "mlp"
WIDTH = 64
RULES = {"validate.INPUT.min": "-5", "validate.INPUT.max": "5", "validate.INPUT.allow_nan": "false"}
INVALID_ARGUMENT = {"http": "400", "grpc": "StatusCode.INVALID_ARGUMENT"}
PROTOCOLS = ("http", "grpc")


def model(repo, name, params):
    (repo / name / "1").mkdir(parents=True)
    shutil.copy(MLP / "1" / "model.onnx", repo / name / "1" / "model.onnx")
    config = (MLP / "config.pbtxt").read_text().replace('name: "mlp"', f'name: "{name}"')
    for key, value in params.items():
        config += f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
    (repo / name / "config.pbtxt").write_text(config)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("validation")
    repo = tmp / "repo"
    model(repo, "mlp", RULES)  # validate.mode defaults to reject
    model(repo, "mlp_flag", {**RULES, "validate.mode": "flag"})
    with Inferd(tmp, [str(repo)]) as s:
        yield s


def client(server, protocol):
    if protocol == "http":
        return httpclient, httpclient.InferenceServerClient(url=server.server.http_url)
    return grpcclient, grpcclient.InferenceServerClient(url=server.server.grpc_url)


def infer(server, protocol, name, rows, request_id=""):
    module, c = client(server, protocol)
    try:
        i = module.InferInput("INPUT", list(rows.shape), "FP32")
        i.set_data_from_numpy(np.ascontiguousarray(rows, np.float32))
        return c.infer(name, [i], request_id=request_id).as_numpy("OUTPUT")
    finally:
        c.close()


def rows(n=3, seed=0):
    return np.clip(np.random.default_rng(seed).standard_normal((n, WIDTH)), -3, 3).astype(np.float32)


def with_value(row, feature, value, n=3):
    x = rows(n)
    x[row, feature] = value
    return x


# Each: the rows, and the message's end (after "input 'INPUT' of model 'NAME': ").
VIOLATIONS = {
    "max": (with_value(2, 2, 7.5), "feature 2 value 7.5 is above validate.INPUT.max 5"),
    "min": (with_value(0, 0, -6.0), "feature 0 value -6 is below validate.INPUT.min -5"),
    "allow_nan": (with_value(1, 63, np.nan), "feature 63 value NaN is NaN, and validate.INPUT.allow_nan is false"),
}


def served(server, name):
    import json

    status, body = server.get(f"/v2/models/{name}/stats")
    assert status == 200, body
    return sum(s["inference_stats"]["success"]["count"] for s in json.loads(body)["model_stats"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("rule", sorted(VIOLATIONS))
def test_reject_mode_refuses_a_value_that_breaks_a_rule_naming_it(server, protocol, rule):
    x, ending = VIOLATIONS[rule]
    before = served(server, "mlp")
    with pytest.raises(InferenceServerException) as e:
        infer(server, protocol, "mlp", x)
    assert e.value.status() == INVALID_ARGUMENT[protocol]
    assert e.value.message() == f"input 'INPUT' of model 'mlp': {ending}", e.value.message()
    assert served(server, "mlp") == before, "a refused request is not run"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reject_mode_serves_values_within_the_rules_bounds_included(server, protocol, mlp_reference):
    x = rows(4)
    x[0, :] = 5.0
    x[1, :] = -5.0
    out = infer(server, protocol, "mlp", x)
    np.testing.assert_allclose(out, mlp_reference(x.astype(np.float64)), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_flag_mode_serves_and_counts_each_violating_request(server, protocol, mlp_reference):
    def counted(rule):
        return server.metric("inferd_validation_failures_total", model="mlp_flag", version="1", input="INPUT",
                             rule=rule)

    before = {rule: counted(rule) for rule in VIOLATIONS}
    for rule, value in before.items():
        assert value is not None, f"inferd_validation_failures_total for rule {rule} is on the metrics page"
    sent = {"max": 3, "min": 2, "allow_nan": 1}
    for rule, times in sent.items():
        x, _ = VIOLATIONS[rule]
        for k in range(times):
            out = infer(server, protocol, "mlp_flag", x, request_id=f"flagged-{protocol}-{rule}-{k}")
            if rule != "allow_nan":
                np.testing.assert_allclose(out, mlp_reference(x.astype(np.float64)), rtol=1e-4, atol=1e-4)
            else:
                assert out.shape == (3, 10)
    infer(server, protocol, "mlp_flag", rows(2), request_id=f"clean-{protocol}")
    for rule, times in sent.items():
        assert counted(rule) - before[rule] == times, rule
    log = server.log()
    for rule in sent:
        assert f"flagged-{protocol}-{rule}-0" in log, f"the flagged request's id is in the log ({rule})"
    clean = [line for line in log.splitlines() if f"clean-{protocol}" in line]
    assert not any("validation" in line for line in clean), "a request within the rules is not flagged"
