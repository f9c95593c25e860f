"""Model repositories in object storage. On S3, against a real S3-compatible server (s3s-fs, which checks
signatures) filled with boto3 as ops would: serving from S3 beside a local folder, following new versions, rewritten and removed
objects in poll mode (and nothing else: no reload while nothing changes), the store going away and coming
back, partial uploads, a restart with the store down served from the cache, credentials, explicit mode, and
anonymous access. On Azure Blob Storage, against Azurite (Microsoft's emulator) filled with azure-storage-blob."""

import json
import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import REPO_ROOT
from stores import AzuriteStore, Inferd, S3Store, credentials, run_inferd, wait_for

MODELS = REPO_ROOT / "models"
POLL = ["--model-control-mode", "poll", "--repository-poll-secs", "1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    s = S3Store(tmp_path_factory.mktemp("s3") / "data")
    yield s
    s.stop()


@pytest.fixture
def own_store(tmp_path):
    """A store of the test's own, to stop and start again."""
    s = S3Store(tmp_path / "store")
    yield s
    s.stop()


def infer_mlp(server, x=None):
    x = np.ones((2, 64), dtype=np.float32) if x is None else x
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{server.server.http_port}")
    inp = httpclient.InferInput("INPUT", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer("mlp", [inp]).as_numpy("OUTPUT")


def cache_args(tmp_path):
    return ["--model-cache-dir", str(tmp_path / "cache")]


def test_the_example_models_serve_from_s3_beside_a_local_repository(store, tmp_path, mlp_reference):
    bucket = store.bucket("examples")
    for m in ["mlp", "simple"]:
        store.upload_model(bucket, "team/repo", MODELS / m)
    with Inferd(tmp_path, ["tests/models", store.url(bucket, "team/repo")], cache_args(tmp_path),
                env=credentials()) as s:
        names = {e["name"] for e in s.index() if e.get("state") == "READY"}
        assert {"mlp", "simple", "identity_fp32"} <= names
        x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
        np.testing.assert_allclose(infer_mlp(s, x), mlp_reference(x), rtol=1e-5, atol=1e-5)
        grpc = grpcclient.InferenceServerClient(url=f"127.0.0.1:{s.server.grpc_port}")
        assert grpc.is_model_ready("simple")
        # Each model's files were fetched once, into a complete copy in the cache.
        assert "model 'mlp' from " in s.log() and "2 file(s) fetched" in s.log()
        copies = list((tmp_path / "cache").glob("*/models/mlp/*/1/model.onnx"))
        assert len(copies) == 1
        assert copies[0].read_bytes() == (MODELS / "mlp" / "1" / "model.onnx").read_bytes()
        assert s.metric("inferd_repository_sync_failures_total", repository=store.url(bucket, "team/repo")) == 0
        assert s.metric("inferd_repository_last_sync_timestamp_seconds", repository=store.url(bucket, "team/repo")) > 0


def test_poll_follows_new_versions_rewritten_and_removed_objects_and_reloads_nothing_else(store, tmp_path):
    bucket = store.bucket("follow")
    store.upload_model(bucket, "", MODELS / "mlp")
    store.upload_model(bucket, "", MODELS / "simple")
    with Inferd(tmp_path, [store.url(bucket)], [*POLL, *cache_args(tmp_path)], env=credentials()) as s:
        assert s.ready_versions("mlp") == ["1"]
        for _ in range(5):
            infer_mlp(s)
        assert s.requests_served("mlp") == 5
        # Ten polls with nothing changed: no reload, so the version's statistics are still there.
        synced = s.metric("inferd_repository_last_sync_timestamp_seconds", repository=store.url(bucket))
        wait_for(lambda: s.metric("inferd_repository_last_sync_timestamp_seconds",
                                  repository=store.url(bucket)) >= synced + 10, 30, "ten polls")
        assert s.requests_served("mlp") == 5
        assert "model files changed" not in s.log()

        # A new version folder: followed by the version policy (latest 1), fetching only the new files (its
        # model.onnx and profile.json); the config and version 1's two files are unchanged.
        store.upload_model(bucket, "", MODELS / "mlp" / "1", name="mlp/2")
        wait_for(lambda: s.ready_versions("mlp") == ["2"], 30, "version 2 to replace version 1")
        assert "2 file(s) fetched" in s.log() and "3 unchanged since the cached copy" in s.log()

        # An object rewritten under the same key reloads that model.
        config = (MODELS / "mlp" / "config.pbtxt").read_text().replace("max_batch_size: 64", "max_batch_size: 32")
        store.put(bucket, "mlp/config.pbtxt", config.encode())

        def max_batch():
            return json.loads(s.get("/v2/models/mlp/config")[1]).get("max_batch_size")

        wait_for(lambda: max_batch() == 32, 30, "the rewritten config to be loaded")
        assert s.requests_served("simple") == 0 and s.ready_versions("simple") == ["1"]

        # A removed model is unloaded.
        store.delete_prefix(bucket, "simple/")
        wait_for(lambda: s.get("/v2/models/simple/ready")[0] != 200, 30, "simple to be unloaded")
        assert s.get("/v2/models/mlp/ready")[0] == 200


def test_a_partial_or_corrupt_upload_leaves_the_serving_version_serving(store, tmp_path):
    bucket = store.bucket("corrupt")
    store.upload_model(bucket, "", MODELS / "mlp")
    with Inferd(tmp_path, [store.url(bucket)], [*POLL, *cache_args(tmp_path)], env=credentials()) as s:
        good = infer_mlp(s)
        # Version 2 arrives cut short (a copy interrupted half-way).
        model = (MODELS / "mlp" / "1" / "model.onnx").read_bytes()
        store.put(bucket, "mlp/2/model.onnx", model[: len(model) // 2])
        wait_for(lambda: "failed to load model 'mlp'" in s.log(), 30, "the load of version 2 to fail")
        assert s.ready_versions("mlp") == ["1"]
        np.testing.assert_array_equal(infer_mlp(s), good)
        reason = [e for e in s.index() if e["name"] == "mlp"][0].get("reason", "")
        assert "the last load failed" in reason
        # Once complete, it serves.
        store.put(bucket, "mlp/2/model.onnx", model)
        wait_for(lambda: s.ready_versions("mlp") == ["2"], 30, "the complete version 2")


def test_the_store_going_away_is_not_a_change_and_its_return_resyncs(own_store, tmp_path):
    bucket = own_store.bucket("outage")
    own_store.upload_model(bucket, "", MODELS / "mlp")
    repo = own_store.url(bucket)
    with Inferd(tmp_path, [repo], [*POLL, *cache_args(tmp_path)], env=credentials()) as s:
        good = infer_mlp(s)
        own_store.stop()
        wait_for(lambda: (s.metric("inferd_repository_sync_failures_total", repository=repo) or 0) >= 3,
                 60, "three failed listings")
        # Every model keeps serving; readiness is as it was.
        np.testing.assert_array_equal(infer_mlp(s), good)
        assert s.get("/v2/health/ready")[0] == 200
        assert s.ready_versions("mlp") == ["1"]
        assert "unloading" not in s.log()
        # Logged once per outage, not at every poll.
        assert s.log().count(f"cannot list model repository {repo}") == 1

        own_store.start()
        wait_for(lambda: "is reachable again" in s.log(), 30, "the store to be listed again")
        own_store.upload_model(bucket, "", MODELS / "mlp" / "1", name="mlp/2")
        wait_for(lambda: s.ready_versions("mlp") == ["2"], 30, "a version added after the outage")


def test_a_restart_with_the_store_down_serves_from_a_complete_cache(own_store, tmp_path):
    bucket = own_store.bucket("cached")
    own_store.upload_model(bucket, "", MODELS / "mlp")
    repo = own_store.url(bucket)
    with Inferd(tmp_path, [repo], cache_args(tmp_path), env=credentials(), name="first") as s:
        good = infer_mlp(s)
    own_store.stop()
    with Inferd(tmp_path, [repo], [*POLL, *cache_args(tmp_path)], env=credentials(), name="second") as s:
        assert "from the cache" in s.log()
        np.testing.assert_array_equal(infer_mlp(s), good)
        own_store.start()
        wait_for(lambda: "is reachable again" in s.log(), 30, "a resync once the store is back")
        assert s.ready_versions("mlp") == ["1"]

    # Without a cache, the start fails naming the store (or, without --exit-on-error, serves the rest).
    own_store.stop()
    empty = ["--model-cache-dir", str(tmp_path / "empty-cache")]
    code, out = run_inferd(["--model-repository", repo, *empty, "--exit-on-error", "true"], env=credentials())
    assert code != 0 and f"cannot list model repository {repo}" in out, out
    with Inferd(tmp_path, ["tests/models", repo], empty, env=credentials(), name="rest") as s:
        assert s.get("/v2/models/identity_fp32/ready")[0] == 200
        assert s.get("/v2/models/mlp/ready")[0] != 200
        assert f"cannot list model repository {repo}" in s.log()


def test_a_copy_that_never_completed_is_not_served_from_the_cache(own_store, tmp_path):
    bucket = own_store.bucket("halfway")
    own_store.upload_model(bucket, "", MODELS / "mlp")
    repo = own_store.url(bucket)
    with Inferd(tmp_path, [repo], cache_args(tmp_path), env=credentials(), name="first"):
        pass
    # A crash while the next copy was being built left it half-made, and the complete copy was lost.
    [copy] = list((tmp_path / "cache").glob("*/models/mlp/*/1/model.onnx"))
    model_root = copy.parent.parent.parent
    half = model_root / ".partial-0123456789abcdef01234567-1-0" / "1"
    half.mkdir(parents=True)
    downloading = model_root / ".partial-0123456789abcdef01234567-1-0.d" / "7"
    downloading.parent.mkdir()
    downloading.write_bytes(copy.read_bytes()[:100])
    shutil.rmtree(copy.parent.parent)
    own_store.stop()
    code, out = run_inferd(["--model-repository", repo, *cache_args(tmp_path), "--exit-on-error", "true"],
                           env=credentials())
    assert code != 0 and f"cannot list model repository {repo}" in out, out
    assert not half.parent.exists() and not downloading.exists(), "the interrupted copy is cleared"


def test_wrong_credentials_or_a_missing_bucket_fail_naming_the_store_and_the_cause(store, tmp_path):
    bucket = store.bucket("secured")
    store.upload_model(bucket, "", MODELS / "mlp")
    args = [*cache_args(tmp_path), "--exit-on-error", "true"]
    code, out = run_inferd(["--model-repository", store.url(bucket), *args], env=credentials(secret="wrong"))
    assert code != 0, out
    assert f"cannot list model repository {store.url(bucket)}" in out and "SignatureDoesNotMatch" in out, out
    code, out = run_inferd(["--model-repository", store.url("no-such-bucket"), *args], env=credentials())
    assert code != 0, out
    assert f"cannot list model repository {store.url('no-such-bucket')}" in out and "NoSuchBucket" in out, out


def test_explicit_mode_and_the_repository_api_work_on_s3(store, tmp_path):
    bucket = store.bucket("explicit")
    store.upload_model(bucket, "", MODELS / "mlp")
    with Inferd(tmp_path, [store.url(bucket)], ["--model-control-mode", "explicit", *cache_args(tmp_path)],
                env=credentials()) as s:
        assert [e for e in s.index() if e["name"] == "mlp"][0].get("state") != "READY"
        assert s.post("/v2/repository/models/mlp/load", {})[0] == 200
        assert infer_mlp(s).shape == (2, 10)
        # A load lists the store again: a version uploaded since is what it loads.
        store.upload_model(bucket, "", MODELS / "mlp" / "1", name="mlp/3")
        assert s.post("/v2/repository/models/mlp/load", {})[0] == 200
        assert s.ready_versions("mlp") == ["3"]
        assert s.post("/v2/repository/models/mlp/unload", {})[0] == 200
        assert s.get("/v2/models/mlp/ready")[0] != 200
        status, body = s.post("/v2/repository/models/nope/load", {})
        assert status == 400 and "nope" in body["error"]


def test_anonymous_access_to_a_public_bucket(tmp_path):
    public = S3Store(tmp_path / "public", anonymous=True)
    try:
        target = public.data_dir / "open" / "mlp"
        shutil.copytree(MODELS / "mlp", target)  # an unsigned store: its buckets are its folders
        with Inferd(tmp_path, [public.url("open")], cache_args(tmp_path), env={"AWS_SKIP_SIGNATURE": "true"}) as s:
            assert infer_mlp(s).shape == (2, 10)
    finally:
        public.stop()


def test_an_azure_blob_container_serves_through_the_same_cache(tmp_path, mlp_reference):
    azure = AzuriteStore(tmp_path / "azurite")
    try:
        container = azure.container("models")
        azure.upload_model(container, "prod", MODELS / "mlp")
        with Inferd(tmp_path, ["az://models/prod"], [*POLL, *cache_args(tmp_path)], env=azure.env) as s:
            x = np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32)
            np.testing.assert_allclose(infer_mlp(s, x), mlp_reference(x), rtol=1e-5, atol=1e-5)
            azure.upload_model(container, "prod", MODELS / "simple")
            wait_for(lambda: s.get("/v2/models/simple/ready")[0] == 200, 30, "a model added to the container")
            assert s.metric("inferd_repository_sync_failures_total", repository="az://models/prod") == 0
    finally:
        azure.stop()
