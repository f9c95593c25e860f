"""An MLflow Model Registry as a model repository, against a real `mlflow server` (SQLite backend, artifact
proxy) with models logged by `mlflow.onnx.log_model` and aliases and tags set with `MlflowClient`: the
registered model serves under its MLflow versions, every alias is a traffic label, moving `champion` under
continuous load fails no request and the answers follow it, a `challenger` at weight 10 takes about 10%, and
artifacts a registry keeps on S3 (no proxy) are read from there."""

import json
import threading
import time

import numpy as np
import pytest

from conftest import REPO_ROOT
from stores import Inferd, MlflowServer, S3Store, credentials, wait_for

MLP = str(REPO_ROOT / "models" / "mlp" / "1" / "model.onnx")
POLL = ["--model-control-mode", "poll", "--repository-poll-secs", "1"]


@pytest.fixture(scope="module")
def mlflow(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()


X = np.random.default_rng(7).standard_normal((1, 64)).astype(np.float32)


def body(x=X):
    return {"inputs": [{"name": "INPUT", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


def answer(s, model, version=None):
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    status, out = s.post(path, body())
    assert status == 200, out
    return tuple(np.round(out["outputs"][0]["data"], 4))


def test_a_registered_onnx_model_serves_its_versions_with_aliases_as_labels(mlflow, tmp_path):
    config = tmp_path / "config.pbtxt"
    config.write_text('max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 100 }\n')
    mlflow.run(
        {"log": "fraud", "onnx": MLP, "scale": 1.0, "config": str(config)},
        {"log": "fraud", "onnx": MLP, "scale": 2.0, "config": str(config)},
        {"alias": "champion", "model": "fraud", "version": 1},
    )
    args = [*POLL, "--model-cache-dir", str(tmp_path / "cache")]
    with Inferd(tmp_path, [f"mlflow://127.0.0.1:{mlflow.port}"], args) as s:
        # The newest version and the champion's are served, under MLflow's numbers.
        assert s.ready_versions("fraud") == ["1", "2"]
        v1, v2 = answer(s, "fraud", "1"), answer(s, "fraud", "2")
        assert v1 != v2
        assert answer(s, "fraud", "champion") == v1
        # A request naming no version goes to the champion.
        assert answer(s, "fraud") == v1
        # The config logged beside the model is the one served (its inputs completed from the ONNX file).
        cfg = json.loads(s.get("/v2/models/fraud/config")[1])
        assert cfg["max_batch_size"] == 8 and cfg["input"][0]["name"] == "INPUT"
        status, out = s.post("/v2/models/fraud/versions/challenger/infer", body())
        assert status == 404 and "challenger" in out["error"]

        # An alias set later becomes a label within a poll.
        mlflow.run({"alias": "challenger", "model": "fraud", "version": 2})
        wait_for(lambda: s.post("/v2/models/fraud/versions/challenger/infer", body())[0] == 200, 30,
                 "the challenger label")
        assert answer(s, "fraud", "challenger") == v2


def test_moving_champion_under_continuous_load_fails_nothing_and_answers_follow(mlflow, tmp_path):
    mlflow.run(
        {"log": "churn", "onnx": MLP, "scale": 1.0},
        {"log": "churn", "onnx": MLP, "scale": 3.0},
        {"alias": "champion", "model": "churn", "version": 1},
    )
    args = [*POLL, "--model-cache-dir", str(tmp_path / "cache")]
    with Inferd(tmp_path, [f"mlflow://127.0.0.1:{mlflow.port}"], args) as s:
        v1, v2 = answer(s, "churn", "1"), answer(s, "churn", "2")
        failures, answers, stop = [], [], threading.Event()

        def client(version):
            while not stop.is_set():
                status, out = s.post(
                    "/v2/models/churn" + (f"/versions/{version}" if version else "") + "/infer", body())
                if status != 200:
                    failures.append((status, out))
                else:
                    answers.append((version, time.monotonic(), tuple(np.round(out["outputs"][0]["data"], 4))))

        threads = [threading.Thread(target=client, args=(v,)) for v in (None, "champion", None, "champion")]
        for t in threads:
            t.start()
        time.sleep(1.0)
        moved = time.monotonic()
        mlflow.run({"alias": "champion", "model": "churn", "version": 2})
        wait_for(lambda: answers and answers[-1][2] == v2 and answer(s, "churn", "champion") == v2, 30,
                 "answers to follow champion to version 2")
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
        assert failures == [], failures[:5]
        before = [a for a in answers if a[1] < moved]
        assert before and all(a[2] == v1 for a in before)
        settled = [a for a in answers if a[1] > answers[-1][1] - 0.5]
        assert settled and all(a[2] == v2 for a in settled)
        assert len(answers) > 100


def test_a_challenger_at_weight_10_takes_about_a_tenth_of_the_traffic(mlflow, tmp_path):
    mlflow.run(
        {"log": "ranker", "onnx": MLP, "scale": 1.0},
        {"log": "ranker", "onnx": MLP, "scale": 0.5},
        {"alias": "champion", "model": "ranker", "version": 1},
        {"alias": "challenger", "model": "ranker", "version": 2},
        {"model_tag": "inferd.weight.champion", "model": "ranker", "value": "90"},
        {"version_tag": "inferd.weight", "model": "ranker", "version": 2, "value": "10"},
    )
    args = [*POLL, "--model-cache-dir", str(tmp_path / "cache")]
    with Inferd(tmp_path, [f"mlflow://127.0.0.1:{mlflow.port}"], args) as s:
        v2 = answer(s, "ranker", "challenger")
        n = 2000
        share = sum(answer(s, "ranker") == v2 for _ in range(n)) / n
        assert 0.07 <= share <= 0.13, share
        traffic = json.loads(s.get("/v2/models/ranker/traffic")[1])
        assert traffic["labels"] == {"champion": 1, "challenger": 2}
        assert traffic["weights"] == {"1": 90, "2": 10}


def test_artifacts_on_s3_are_read_straight_from_the_store(tmp_path):
    store = S3Store(tmp_path / "s3")
    bucket = store.bucket("mlflow-artifacts")
    registry = MlflowServer(tmp_path, s3_artifacts=(store, bucket))
    try:
        registry.run({"log": "scorer", "onnx": MLP, "scale": 1.0},
                     {"alias": "champion", "model": "scorer", "version": 1})
        keys = [o["Key"] for o in store.client().list_objects_v2(Bucket=bucket)["Contents"]]
        assert any(k.endswith("/model.onnx") for k in keys), keys
        env = {**credentials(), "AWS_ENDPOINT_URL": store.endpoint}
        args = ["--model-cache-dir", str(tmp_path / "cache")]
        with Inferd(tmp_path, [f"mlflow://127.0.0.1:{registry.port}"], args, env=env) as s:
            assert s.ready_versions("scorer") == ["1"]
            assert answer(s, "scorer", "champion") == answer(s, "scorer", "1")
    finally:
        registry.stop()
        store.stop()
