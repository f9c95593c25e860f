"""Drift monitoring (issue 15) against the real server: what `/v2/models/{m}/drift` and the Prometheus page report
for traffic whose distribution we control, checked against independent computations.

- mlp (64 FP32 inputs) profiled on 5000 seeded N(0,1) rows; one window of 1000 rows with inputs 3, 17 and 40
  shifted by one standard deviation: exactly those three drift (PSI > 0.25, every other input < 0.1), every
  reported PSI and Jensen–Shannon distance equals NumPy's from the reported shares and from the rows we sent
  binned with the reported edges, the metrics equal the report, and Evidently (PyPI, pinned in
  scripts/requirements.txt; its PSI per column) reaches the same verdict on every input.
- `drift.sample` 0.1 samples about a tenth of the rows and still finds the shifted inputs; a reload starts
  fresh windows; a version without a profile serves and `/drift` says why.
- minilm: text five times longer than its reference drifts in length (characters and tokens), text spread like
  its reference does not.
- Canary: a version whose outputs favour class 0 diverges from the stable arm; the guard
  (`guard.max_divergence`) rolls it back to weight 0 and `inferd_rollbacks_total` counts it.

Every server is started here on free ports with a temporary repository.
"""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import DEFAULT_BIN, REPO_ROOT
from stores import Inferd

MLP = REPO_ROOT / "models" / "mlp"
MINILM = REPO_ROOT / "models" / "minilm"
WIDTH = 64
REFERENCE_ROWS = 5000
SHIFTED = (3, 17, 40)
PSI_DRIFTED = 0.25
PSI_STABLE = 0.1
FLOOR = 1e-4  # each share's floor in PSI (server/health/score.rs, Evidently's)
REQUIRED = bool(os.environ.get("INFERD_REQUIRE_FIXTURES"))


# ------------------------------------------------------------------ reference computations


def psi(reference, live):
    r = np.maximum(np.asarray(reference, float), FLOOR)
    l = np.maximum(np.asarray(live, float), FLOOR)
    return float(np.sum((l - r) * np.log(l / r)))


def js_distance(p, q):
    """Jensen–Shannon distance, base 2 (the square root of the divergence), by SciPy."""
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(np.asarray(p, float), np.asarray(q, float), base=2))


def binned_shares(values, edges):
    """Shares of 10 quantile bins: a value's bin is the number of edges strictly below it; NaNs are left out."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    bins = np.searchsorted(np.asarray(edges, np.float64), values, side="left")
    return np.bincount(bins, minlength=len(edges) + 1) / max(len(values), 1)


def numpy_profile(model, inputs, outputs=()):
    """A profile in the server's format (server/health/profile.rs), made by NumPy: `inputs`/`outputs` are
    (name, kind, rows) with kind "elements" or "length" (one feature per column, decile edges) or "classes"
    (argmax)."""

    def feature(name, column, classes=None):
        column = np.asarray(column, np.float64)
        if classes is None:
            edges = [float(e) for e in np.quantile(column, np.arange(1, 10) / 10)]
            shares = binned_shares(column, edges)
        else:
            edges, shares = [], np.bincount(column.astype(int), minlength=classes) / len(column)
        return {"name": name, "edges": edges, "shares": [float(s) for s in shares], "mean": float(column.mean()),
                "std": float(column.std()), "min": float(column.min()), "max": float(column.max()),
                "nan_share": 0.0}

    def tensor(name, kind, rows):
        rows = np.asarray(rows, np.float64)
        if kind == "classes":
            features = [feature("class", rows.argmax(axis=1), classes=rows.shape[1])]
        else:
            features = [feature(str(i), rows[:, i]) for i in range(rows.shape[1])]
        return {"name": name, "kind": kind, "features": features}

    rows = len(inputs[0][2])
    return {"format": "inferd-profile/1", "model": model, "rows": rows, "source": "numpy",
            "inputs": [tensor(*t) for t in inputs], "outputs": [tensor(*t) for t in outputs]}


def reference_rows(seed=1):
    return np.random.default_rng(seed).standard_normal((REFERENCE_ROWS, WIDTH)).astype(np.float32)


# ------------------------------------------------------------------ repositories and servers


def mlp_config(name="mlp", params=None, version_policy=None):
    text = (MLP / "config.pbtxt").read_text().replace('name: "mlp"', f'name: "{name}"')
    if version_policy:
        text += f"version_policy: {version_policy}\n"
    for key, value in (params or {}).items():
        text += f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
    return text


def mlp_model(repo, name="mlp", versions=(1,), params=None, version_policy=None):
    model = repo / name
    for v in versions:
        (model / str(v)).mkdir(parents=True)
        shutil.copy(MLP / "1" / "model.onnx", model / str(v) / "model.onnx")
    (model / "config.pbtxt").write_text(mlp_config(name, params, version_policy))
    return model


def profile_mlp(repo, model, version, out, classifier=None):
    """The mlp's reference profile, made by `inferd profile` from `reference_rows()`; returns those rows."""
    x = reference_rows()
    data = Path(out).with_suffix(".npy")
    np.save(data, x)
    binary = Path(os.environ.get("INFERD_BIN", DEFAULT_BIN))
    args = [str(binary), "profile", "--model-repository", str(repo), "--model", model, "--version", str(version),
            "--data", str(data), "--out", str(out)]
    if classifier:
        args += ["--classifier", classifier]
    done = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    data.unlink()
    return x


def http_client(server):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(url=server.server.http_url, network_timeout=120)


def send(client, rows, model="mlp", version="", batch=50):
    import tritonclient.http as httpclient

    for start in range(0, len(rows), batch):
        chunk = np.ascontiguousarray(rows[start:start + batch], dtype=np.float32)
        i = httpclient.InferInput("INPUT", list(chunk.shape), "FP32")
        i.set_data_from_numpy(chunk)
        client.infer(model, [i], model_version=version)


def drift(server, model="mlp", version=None):
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/drift"
    status, body = server.get(path)
    return status, json.loads(body)


def shifted_rows(n, seed):
    x = np.random.default_rng(seed).standard_normal((n, WIDTH)).astype(np.float32)
    x[:, list(SHIFTED)] += 1.0
    return x


def input_psi(report):
    (t,) = [t for t in report["inputs"] if t["name"] == "INPUT"]
    return {int(f["name"]): f["psi"] for f in t["features"]}


def assert_only_shifted_drift(report):
    scores = input_psi(report)
    assert sorted(scores) == list(range(WIDTH))
    for f, value in scores.items():
        if f in SHIFTED:
            assert value > PSI_DRIFTED, f"input {f} was shifted by one standard deviation: PSI {value}"
        else:
            assert value < PSI_STABLE, f"input {f} was not shifted: PSI {value}"


# ------------------------------------------------------------------ one window of shifted mlp traffic


@pytest.fixture(scope="module")
def shifted_window(tmp_path_factory):
    """A server with mlp profiled on the reference rows (profile in the version folder), before and after one
    window of 1000 rows of which inputs 3, 17 and 40 are shifted by +1."""
    tmp = tmp_path_factory.mktemp("drift")
    repo = tmp / "repo"
    mlp_model(repo, params={"drift.window": "1000"})
    reference = profile_mlp(repo, "mlp", 1, repo / "mlp" / "1" / "profile.json")
    with Inferd(tmp, [str(repo)]) as server:
        before = drift(server)
        window = shifted_rows(1000, seed=2)
        client = http_client(server)
        send(client, window)
        after = drift(server)
        metrics = server.metrics()
        client.close()
    yield {"reference": reference, "window": window, "before": before, "after": after, "metrics": metrics}


def test_before_a_window_completes_the_report_shows_the_reference_alone(shifted_window):
    status, r = shifted_window["before"]
    assert status == 200, r
    assert (r["model"], r["version"], r["window_rows"], r["sample"]) == ("mlp", "1", 1000, 1.0)
    assert r["reference_rows"] == REFERENCE_ROWS
    assert r["profile"].endswith("profile.json")
    assert (r["windows_completed"], r["pending_rows"], r["updated"], r["psi_max"]) == (0, 0, None, None)
    (t,) = r["inputs"]
    assert (t["name"], t["kind"], len(t["features"])) == ("INPUT", "elements", WIDTH)
    for f in t["features"]:
        assert f["psi"] is None and f["js"] is None and f["live"] is None
        assert len(f["edges"]) == 9 and len(f["reference"]) == 10


def test_the_reported_edges_are_the_reference_deciles(shifted_window):
    _, r = shifted_window["after"]
    reference = shifted_window["reference"].astype(np.float64)
    (t,) = r["inputs"]
    for f in t["features"]:
        column = reference[:, f["index"]]
        np.testing.assert_allclose(f["edges"], np.quantile(column, np.arange(1, 10) / 10), rtol=0, atol=1e-9)
        np.testing.assert_allclose(f["reference"], binned_shares(column, f["edges"]), rtol=0, atol=1e-9)


def test_one_window_with_three_shifted_inputs_flags_exactly_those(shifted_window):
    status, r = shifted_window["after"]
    assert status == 200, r
    assert (r["windows_completed"], r["pending_rows"]) == (1, 0)
    assert abs(r["updated"] - time.time()) < 300
    assert_only_shifted_drift(r)
    every = [f["psi"] for t in r["inputs"] + r["outputs"] for f in t["features"]]
    assert r["psi_max"] == pytest.approx(max(every), abs=1e-12)


def test_each_score_equals_numpy_from_the_shares_and_from_the_rows_sent(shifted_window):
    _, r = shifted_window["after"]
    window = shifted_window["window"].astype(np.float64)
    (t,) = r["inputs"]
    for f in t["features"]:
        assert f["live_values"] == 1000
        assert sum(f["live"]) == pytest.approx(1.0, abs=1e-9)
        assert f["psi"] == pytest.approx(psi(f["reference"], f["live"]), abs=1e-6), f["index"]
        assert f["js"] == pytest.approx(js_distance(f["reference"], f["live"]), abs=1e-6), f["index"]
        ours = binned_shares(window[:, f["index"]], f["edges"])
        np.testing.assert_allclose(f["live"], ours, rtol=0, atol=1e-12, err_msg=f"feature {f['index']}")
        assert f["psi"] == pytest.approx(psi(f["reference"], ours), abs=1e-6), f["index"]
        assert f["js"] == pytest.approx(js_distance(f["reference"], ours), abs=1e-6), f["index"]


def metric_values(text, name):
    """{labels as a frozenset of pairs: value} of one metric family's samples."""

    found = {}
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
            found[labels] = float(m.group(2))
    return found


def test_the_metrics_equal_the_report(shifted_window):
    _, r = shifted_window["after"]
    text = shifted_window["metrics"]
    psis, jss = metric_values(text, "inferd_drift_psi"), metric_values(text, "inferd_drift_js")
    version = {("model", "mlp"), ("version", "1")}
    for t in r["inputs"] + r["outputs"]:
        for f in t["features"]:
            labels = frozenset(version | {("tensor", t["name"]), ("feature", f["name"])})
            assert labels in psis, f"inferd_drift_psi{{{dict(labels)}}} is on the metrics page"
            assert psis[labels] == pytest.approx(f["psi"], abs=1e-9)
            assert jss[labels] == pytest.approx(f["js"], abs=1e-9)
    assert len(psis) == sum(len(t["features"]) for t in r["inputs"] + r["outputs"])
    assert metric_values(text, "inferd_drift_psi_max") == {frozenset(version): pytest.approx(r["psi_max"], abs=1e-9)}
    assert metric_values(text, "inferd_drift_windows_total") == {frozenset(version): 1.0}


def test_evidently_reaches_the_same_verdict_on_every_input(shifted_window):
    """Evidently's PSI (its own binning) per input column, reference rows against the window sent."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    columns = [f"f{i}" for i in range(WIDTH)]
    definition = DataDefinition(numerical_columns=columns)
    reference = Dataset.from_pandas(pd.DataFrame(shifted_window["reference"], columns=columns),
                                    data_definition=definition)
    current = Dataset.from_pandas(pd.DataFrame(shifted_window["window"], columns=columns),
                                  data_definition=definition)
    threshold = 0.1  # Evidently's default PSI threshold: drift at or above it
    snapshot = Report([ValueDrift(column=c, method="psi", threshold=threshold) for c in columns]).run(
        current, reference)
    evidently_psi = {int(m["config"]["column"][1:]): m["value"] for m in snapshot.dict()["metrics"]}
    ours = input_psi(shifted_window["after"][1])
    assert sorted(evidently_psi) == list(range(WIDTH))
    for f in range(WIDTH):
        evidently_drifted = evidently_psi[f] >= threshold
        assert evidently_drifted == (f in SHIFTED), f"input {f}: Evidently's PSI {evidently_psi[f]}"
        assert evidently_drifted == (ours[f] > PSI_DRIFTED), f"input {f}: ours {ours[f]}, Evidently's {evidently_psi[f]}"


# ------------------------------------------------------------------ sampling, reload, a version without a profile


def test_sampling_a_tenth_finds_the_shifted_inputs_and_a_reload_starts_fresh_windows(tmp_path, mlp_reference):
    repo = tmp_path / "repo"
    mlp_model(repo, versions=(1, 2), params={"drift.window": "1000", "drift.sample": "0.1"},
              version_policy="{ all: {} }")
    profile_mlp(repo, "mlp", 1, repo / "mlp" / "1" / "profile.json")  # version 1 only: 2 has none
    with Inferd(tmp_path, [str(repo)], args=("--model-control-mode", "explicit", "--load-model", "mlp")) as server:
        client = http_client(server)
        rows = 15000
        send(client, shifted_rows(rows, seed=3), version="1", batch=64)
        status, r = drift(server, version="1")
        assert status == 200, r
        assert r["sample"] == 0.1
        sampled = r["windows_completed"] * 1000 + r["pending_rows"]
        assert r["windows_completed"] >= 1
        assert abs(sampled - rows * 0.1) < 300, f"{sampled} of {rows} rows sampled at 0.1"
        assert_only_shifted_drift(r)
        windows = {("model", "mlp"), ("version", "1")}
        assert metric_values(server.metrics(), "inferd_drift_windows_total")[frozenset(windows)] == \
            r["windows_completed"]

        # A version without a profile serves as ever, and /drift says why it has none.
        x = np.random.default_rng(4).standard_normal((3, WIDTH)).astype(np.float32)
        import tritonclient.http as httpclient

        i = httpclient.InferInput("INPUT", [3, WIDTH], "FP32")
        i.set_data_from_numpy(x)
        out = client.infer("mlp", [i], model_version="2").as_numpy("OUTPUT")
        np.testing.assert_allclose(out, mlp_reference(x.astype(np.float64)), rtol=1e-4, atol=1e-4)
        status, body = drift(server, version="2")
        assert status == 404, body
        assert "profile.json" in body["error"], body
        status, body = drift(server, model="ghost")
        assert status == 404 and "ghost" in body["error"], body

        # A reload (the repository API) starts the loaded version's windows again.
        status, body = server.post("/v2/repository/models/mlp/load", {})
        assert status == 200, body
        status, r = drift(server, version="1")
        assert status == 200, r
        assert (r["windows_completed"], r["pending_rows"], r["psi_max"], r["updated"]) == (0, 0, None, None)
        assert all(f["live"] is None for t in r["inputs"] for f in t["features"])
        client.close()


# ------------------------------------------------------------------ text length drift (minilm)


def minilm_repo(tmp_path, window):
    """A copy of models/minilm (weights linked) with `drift.window` set, and its profile: the shipped one
    (models/minilm/profile.json, made by `inferd profile` from models/minilm/reference.jsonl) when there is one,
    else one made here by NumPy from the same texts, on their length in characters and in tokens (the model's
    tokenizer without its padding). Returns (repo, the reference texts)."""
    if not (MINILM / "1" / "model.safetensors").is_file():
        message = "models/minilm/1/model.safetensors missing (make setup installs it)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    model = tmp_path / "repo" / "minilm"
    (model / "1").mkdir(parents=True)
    for f in (MINILM / "1").iterdir():
        (model / "1" / f.name).symlink_to(f)
    config = (MINILM / "config.pbtxt").read_text()
    config += f'parameters {{ key: "drift.window" value {{ string_value: "{window}" }} }}\n'
    (model / "config.pbtxt").write_text(config)
    texts = []
    for line in (MINILM / "reference.jsonl").read_text().splitlines():
        if line.strip():
            for t in json.loads(line)["inputs"]:
                if t["name"] == "TEXT":
                    texts += [str(s) for s in np.asarray(t["data"]).ravel()]
    assert len(texts) >= window, "models/minilm/reference.jsonl holds the reference texts"
    shipped = MINILM / "profile.json"
    if shipped.is_file():
        shutil.copy(shipped, model / "profile.json")
    else:
        import tokenizers

        tokenizer = tokenizers.Tokenizer.from_file(str(MINILM / "1" / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.no_truncation()
        lengths = np.array([[len(t), len(tokenizer.encode(t, add_special_tokens=False).ids)] for t in texts])
        profile = numpy_profile("minilm", [("TEXT", "length", lengths)])
        for f, name in zip(profile["inputs"][0]["features"], ("chars", "tokens")):
            f["name"] = name
        (model / "profile.json").write_text(json.dumps(profile))
    return model.parent, texts


def stratified(texts, n):
    """n texts spread evenly over the reference's length distribution (every k-th by length)."""
    ordered = sorted(texts, key=len)
    picks = np.linspace(0, len(ordered) - 1, n).round().astype(int)
    return [ordered[i] for i in picks]


def send_texts(client, texts, batch=20):
    import tritonclient.http as httpclient

    for start in range(0, len(texts), batch):
        chunk = np.array([[t.encode()] for t in texts[start:start + batch]], dtype=np.object_)
        i = httpclient.InferInput("TEXT", list(chunk.shape), "BYTES")
        i.set_data_from_numpy(chunk)
        client.infer("minilm", [i])


def length_psi(report):
    (t,) = [t for t in report["inputs"] if t["name"] == "TEXT"]
    assert t["kind"] == "length"
    return {f["name"]: f["psi"] for f in t["features"]}


def test_text_five_times_longer_than_the_reference_drifts_in_length(tmp_path):
    window = 100
    repo, texts = minilm_repo(tmp_path, window)
    like = stratified(texts, window)
    with Inferd(tmp_path, [str(repo)]) as server:
        client = http_client(server)
        send_texts(client, like)
        status, r = drift(server, model="minilm")
        assert status == 200, r
        assert r["windows_completed"] == 1, r
        lengths = length_psi(r)
        assert "chars" in lengths
        for name, value in lengths.items():
            assert value < PSI_STABLE, f"reference-like text: PSI of its length in {name} is {value}"

        send_texts(client, [" ".join([t] * 5) for t in like])
        status, r = drift(server, model="minilm")
        assert r["windows_completed"] == 2, r
        for name, value in length_psi(r).items():
            assert value > PSI_DRIFTED, f"text five times as long: PSI of its length in {name} is {value}"
        client.close()


# ------------------------------------------------------------------ canary divergence and the rollback guard


def biased_onnx(path, class0_boost=1.0):
    """The mlp graph with a constant added to its output's class 0 logit (class 0 then wins ~98% of N(0,1) rows)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(MLP / "1" / "model.onnx"))
    last = [n for n in m.graph.node if "OUTPUT" in n.output][0]
    last.output[list(last.output).index("OUTPUT")] = "OUTPUT_unbiased"
    bias = np.zeros((1, 10), np.float32)
    bias[0, 0] = class0_boost
    m.graph.initializer.append(numpy_helper.from_array(bias, "class0_bias"))
    m.graph.node.append(helper.make_node("Add", ["OUTPUT_unbiased", "class0_bias"], ["OUTPUT"]))
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


@pytest.fixture(scope="module")
def canary(tmp_path_factory):
    """mlp version 1 (stable) and version 2 (class 0 favoured) split 50/50 under a divergence guard, with a
    model-folder profile (outputs as classes) for both; N(0,1) traffic until the guard acts (60 s at most).
    Also a flag-mode value rule no request breaks, so every model-health series is on the metrics page."""
    # Windows of 50 rows fill after 5 requests of 10 rows per arm; the guard needs 40 requests to version 2, so
    # the divergence is on the metrics page for a while before the guard acts on it.
    tmp = tmp_path_factory.mktemp("canary")
    repo = tmp / "repo"
    params = {"weight.1": "50", "weight.2": "50", "label.stable": "1", "guard.version": "2",
              "guard.max_divergence": "0.2", "guard.min_requests": "40", "drift.window": "50",
              "validate.INPUT.max": "1000", "validate.mode": "flag"}
    model = mlp_model(repo, versions=(1, 2), params=params, version_policy="{ all: {} }")
    biased_onnx(model / "2" / "model.onnx")
    profile_mlp(repo, "mlp", 1, model / "profile.json", classifier="OUTPUT")  # the model folder's: both versions
    with Inferd(tmp, [str(repo)]) as server:
        client = http_client(server)
        rng = np.random.default_rng(6)
        divergence, weights, pages = [], None, []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            send(client, rng.standard_normal((10, WIDTH)).astype(np.float32), batch=10)
            page = server.metrics()
            d = metric_values(page, "inferd_arm_divergence").get(frozenset({("model", "mlp"), ("version", "2")}))
            if d is not None:
                divergence.append(d)
                if len(pages) < 1:
                    pages.append(page)
            status, body = server.get("/v2/models/mlp/traffic")
            assert status == 200, body
            weights = {k: int(v) for k, v in json.loads(body)["weights"].items()}
            if weights.get("2") == 0:
                break
            time.sleep(0.01)
        pages.append(server.metrics())
        reports = {v: drift(server, version=v) for v in ("1", "2")}
        client.close()
    yield {"divergence": divergence, "weights": weights, "pages": pages, "reports": reports,
           "log": server.log()}


def test_a_canary_whose_outputs_diverge_is_rolled_back(canary):
    divergence = canary["divergence"]
    assert divergence and max(divergence) > 0.2, f"inferd_arm_divergence of version 2: {divergence[-5:]}"
    assert canary["weights"] == {"1": 50, "2": 0}, "the guard took version 2 out of the split"
    rollbacks = metric_values(canary["pages"][-1], "inferd_rollbacks_total")
    assert rollbacks.get(frozenset({("model", "mlp"), ("version", "2")})) == 1, rollbacks
    assert "divergence" in canary["log"], "the rollback is logged with its reason"

    # Independently: the two arms' latest output windows, as /drift reports them.
    classes = {}
    for v, (status, r) in canary["reports"].items():
        assert status == 200, r
        (t,) = r["outputs"]
        assert (t["name"], t["kind"]) == ("OUTPUT", "classes")
        assert r["windows_completed"] >= 1
        classes[v] = t["features"][0]["live"]
    assert classes["2"][0] > 0.9, f"version 2 answers class 0: {classes['2']}"
    assert js_distance(classes["1"], classes["2"]) > 0.2


def test_every_model_health_metric_the_deploy_files_name_is_served(canary):
    """The alert rules and the model-health dashboard name series these servers expose (test_deploy.py leaves
    them out: the session server has no profile)."""

    text = (REPO_ROOT / "deploy" / "prometheus" / "alerts.yaml").read_text()
    text += (REPO_ROOT / "deploy" / "grafana" / "inferd-model-health.json").read_text()
    names = set(re.findall(r"\binferd_(?:drift|arm|validation)_[a-z0-9_]+", text))
    assert {"inferd_drift_psi_max", "inferd_drift_psi", "inferd_drift_js", "inferd_drift_windows_total",
            "inferd_arm_divergence", "inferd_validation_failures_total"} <= names
    pages = "\n".join(canary["pages"])
    for name in names:
        assert re.search(rf"^# TYPE {name} ", pages, re.M), f"{name} is on the metrics page"
