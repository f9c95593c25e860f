"""Real stores for the remote-repository tests, installed by `make test` (scripts/setup_registry.sh), and an
inferd launcher that takes any repositories and environment.

- `S3Store`: s3s-fs (crates.io), an S3-compatible server that checks SigV4 signatures against its access key and
  keeps objects on disk (a bucket is a folder), so it can be stopped and started again with its data. Filled
  with boto3, as ops would.
- `AzuriteStore`: Azurite (npm), Microsoft's Azure Storage emulator, for `az://` repositories; filled with
  azure-storage-blob.
- `MlflowServer`: `mlflow server` (PyPI) with a SQLite backend and its artifact proxy; models are logged by
  scripts run in its own Python environment (`.deps/mlflow`).

A missing store fails the test: these are fixtures `make test` installs.
"""

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import DEFAULT_BIN, REPO_ROOT, _free_ports, _start_server, _stop

S3S_FS = REPO_ROOT / ".deps" / "s3s" / "bin" / "s3s-fs"
AZURITE = REPO_ROOT / ".deps" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
MLFLOW_BIN = REPO_ROOT / ".deps" / "mlflow" / "bin"
ACCESS_KEY = "inferd-test-key"
SECRET_KEY = "inferd-test-secret"


def require(path, what):
    if not Path(path).exists():
        pytest.fail(f"{what} not found at {path}: run scripts/setup_registry.sh (make test does)")


def wait_for(condition, timeout, what, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


class S3Store:
    """One s3s-fs server on a fixed port and data folder (so a restart finds its objects where they were)."""

    def __init__(self, data_dir, anonymous=False, access_key=None, secret_key=None):
        require(S3S_FS, "s3s-fs (the S3-compatible test server)")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_ports(1)[0]
        self.anonymous = anonymous
        self.access_key = ACCESS_KEY if access_key is None else access_key
        self.secret_key = SECRET_KEY if secret_key is None else secret_key
        self.process = None
        self.start()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def url(self, bucket, prefix=""):
        """The repository as Triton's S3 form for a plain-HTTP endpoint names it."""
        return f"s3://127.0.0.1:{self.port}/{bucket}" + (f"/{prefix}" if prefix else "")

    def start(self):
        keys = [] if self.anonymous else ["--access-key", self.access_key, "--secret-key", self.secret_key]
        log = open(self.data_dir.with_suffix(".log"), "ab")
        self.process = subprocess.Popen(
            [str(S3S_FS), "--host", "127.0.0.1", "--port", str(self.port), *keys, str(self.data_dir)],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()

        def up():
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=1)
            except urllib.error.HTTPError:
                return True  # it answers (403 without a signature)
            except OSError:
                return False
            return True

        wait_for(up, 20, "s3s-fs to accept connections")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=15)

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
        )

    def bucket(self, name):
        self.client().create_bucket(Bucket=name)
        return name

    def upload_model(self, bucket, prefix, model_dir, name=None):
        """Copies a model folder of the repository into the bucket, as `aws s3 cp --recursive` would."""
        model_dir = Path(model_dir)
        name = name or model_dir.name
        s3 = self.client()
        for f in sorted(model_dir.rglob("*")):
            if f.is_file():
                key = f"{prefix}/{name}/{f.relative_to(model_dir).as_posix()}".lstrip("/")
                s3.upload_file(str(f), bucket, key)

    def put(self, bucket, key, body):
        self.client().put_object(Bucket=bucket, Key=key, Body=body)

    def delete_prefix(self, bucket, prefix):
        s3 = self.client()
        for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=o["Key"])


class MlflowServer:
    """`mlflow server` with a SQLite backend. Artifacts go through its proxy (to a folder), or, given
    `s3_artifacts` (an `S3Store` and a bucket), straight to S3 with no proxy, as clients then write them."""

    def __init__(self, root, s3_artifacts=None):
        require(MLFLOW_BIN / "mlflow", "MLflow (the registry's test server)")
        self.port = _free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {}
        if s3_artifacts:
            store, bucket = s3_artifacts
            artifacts = ["--no-serve-artifacts", "--default-artifact-root", f"s3://{bucket}/mlflow"]
            self.env = {"MLFLOW_S3_ENDPOINT_URL": store.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                        "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1"}
        else:
            artifacts = ["--artifacts-destination", str(root / "artifacts"), "--serve-artifacts"]
        log = open(root / "mlflow.log", "wb")
        self.process = subprocess.Popen(
            [str(MLFLOW_BIN / "mlflow"), "server",
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", *artifacts,
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, cwd=root,
            # No background job runner: the registry and the artifact proxy are all the tests use.
            env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", **self.env),
            start_new_session=True,
        )
        log.close()

        def healthy():
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        wait_for(healthy, 120, "mlflow server to answer /health", interval=0.5)

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            self.process.wait(timeout=30)

    def run(self, *steps):
        """Runs steps of tests/interop/mlflow_client.py as an MLflow user would; returns their answers."""
        out = subprocess.run(
            [str(MLFLOW_BIN / "python"), str(REPO_ROOT / "tests" / "interop" / "mlflow_client.py"), self.url],
            input=json.dumps(list(steps)), capture_output=True, text=True, timeout=300,
            env=dict(os.environ, **self.env),
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


class AzuriteStore:
    """Azurite's blob service on a free port, with its well-known development account."""

    ACCOUNT = "devstoreaccount1"
    # Azurite's published development key (the emulator's, not a secret).
    KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

    def __init__(self, data_dir):
        require(AZURITE, "Azurite (the Azure Storage emulator)")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_ports(1)[0]
        log = open(self.data_dir.with_suffix(".log"), "ab")
        self.process = subprocess.Popen(
            [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location",
             str(self.data_dir), "--skipApiVersionCheck", "--silent"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()

        def up():
            try:
                urllib.request.urlopen(f"{self.endpoint}/", timeout=1)
            except urllib.error.HTTPError:
                return True
            except OSError:
                return False
            return True

        wait_for(up, 60, "Azurite to accept connections", interval=0.2)

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}/{self.ACCOUNT}"

    @property
    def env(self):
        """What inferd needs to use the emulator (object_store's names)."""
        return {"AZURE_STORAGE_USE_EMULATOR": "true", "AZURITE_BLOB_STORAGE_URL": f"http://127.0.0.1:{self.port}"}

    def container(self, name):
        from azure.storage.blob import BlobServiceClient

        conn = (f"DefaultEndpointsProtocol=http;AccountName={self.ACCOUNT};AccountKey={self.KEY};"
                f"BlobEndpoint={self.endpoint};")
        service = BlobServiceClient.from_connection_string(conn)
        service.create_container(name)
        return service.get_container_client(name)

    def upload_model(self, container, prefix, model_dir):
        model_dir = Path(model_dir)
        for f in sorted(model_dir.rglob("*")):
            if f.is_file():
                key = f"{prefix}/{model_dir.name}/{f.relative_to(model_dir).as_posix()}".lstrip("/")
                container.upload_blob(key, f.read_bytes(), overwrite=True)

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # it says it closed, and lingers
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def credentials(secret=SECRET_KEY):
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_REGION": "us-east-1",
    }


class Inferd:
    """An inferd server on free ports with the given repositories, args and environment."""

    def __init__(self, tmp_path, repositories, args=(), env=None, name="inferd"):
        binary = Path(os.environ.get("INFERD_BIN", DEFAULT_BIN))
        if not binary.is_file():
            pytest.fail(f"server binary not found at {binary}: run `cargo build --bin inferd`")
        self.log_path = Path(tmp_path) / f"{name}.log"
        self.server, last = _start_server(
            binary, self.log_path, tuple(args), repositories=tuple(repositories), env=env
        )
        if self.server is None:
            pytest.fail(f"inferd exited with {last.process.returncode}:\n{last.log_tail()}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        _stop(self.server.process)

    @property
    def http(self):
        return f"http://127.0.0.1:{self.server.http_port}"

    def log(self):
        return self.log_path.read_text(errors="replace")

    def get(self, path, port=None):
        base = f"http://127.0.0.1:{port}" if port else self.http
        try:
            with urllib.request.urlopen(base + path, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def post(self, path, body):
        req = urllib.request.Request(
            self.http + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def index(self):
        status, body = self.post("/v2/repository/index", {})
        assert status == 200, body
        return body

    def ready_versions(self, model):
        return sorted(e["version"] for e in self.index() if e["name"] == model and e.get("state") == "READY")

    def metrics(self):
        return self.get("/metrics", port=self.server.metrics_port)[1]

    def metric(self, name, **labels):
        """The value of one series, or None."""
        for line in self.metrics().splitlines():
            m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
            if not m or m.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                return float(m.group(3))
        return None

    def requests_served(self, model, version=""):
        """Successful requests in the model's statistics (they start again at 0 when it reloads)."""
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/stats"
        status, body = self.get(path)
        assert status == 200, body
        return sum(s["inference_stats"]["success"]["count"] for s in json.loads(body)["model_stats"])


def run_inferd(args, env=None, timeout=60):
    """Runs the inferd binary to its end (a start that must fail); returns (exit status, output)."""
    binary = Path(os.environ.get("INFERD_BIN", DEFAULT_BIN))
    http, grpc, metrics = _free_ports(3)
    proc = subprocess.run(
        [str(binary), "serve", "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
         *args],
        cwd=REPO_ROOT, env=dict(os.environ, NO_COLOR="1", **(env or {})),
        capture_output=True, text=True, timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr
