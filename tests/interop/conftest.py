"""Shared fixtures for the tritonclient interop suite.

One `inferd` server is started per pytest session (HTTP, gRPC and metrics on free
ports) with both model repositories (`models/` and `tests/models/`), and stopped at
the end of the session.

Environment:
    INFERD_BIN  path to the server binary (default: <repo>/target/debug/inferd)
"""

import importlib.util
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "inferd"
READY_TIMEOUT_S = 60.0
PROTOCOLS = ("http", "grpc")


@dataclass
class Server:
    process: subprocess.Popen
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path

    @property
    def http_url(self):
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self):
        return f"127.0.0.1:{self.grpc_port}"

    def log_tail(self, n=40):
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "<no log>"
        return "\n".join(lines[-n:])


def _free_ports(n):
    """n distinct free TCP ports (all bound at once so they differ, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _http_ready(port):
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/v2/health/ready", timeout=2
        ) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def _tcp_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _stop(process):
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _start_server(binary, log_path, extra_args=(), ready=_http_ready,
                  repositories=("models", "tests/models"), env=None):
    http_port, grpc_port, metrics_port = _free_ports(3)
    log = open(log_path, "wb")
    env = dict(os.environ, NO_COLOR="1", **(env or {}))
    process = subprocess.Popen(
        [
            str(binary), "serve",
            *[a for r in repositories for a in ("--model-repository", r)],
            "--http-port", str(http_port),
            "--grpc-port", str(grpc_port),
            "--metrics-port", str(metrics_port),
            *extra_args,
        ],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    log.close()
    server = Server(process, http_port, grpc_port, metrics_port, log_path)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None, server  # exited early (e.g. a port was taken meanwhile)
        if ready(http_port) and _tcp_open(grpc_port):
            return server, server
        time.sleep(0.1)
    _stop(process)
    pytest.fail(
        f"inferd did not become ready within {READY_TIMEOUT_S:.0f} s; log tail:\n"
        + server.log_tail()
    )


def _serve(tmp_path_factory, name, extra_args=(), ready=_http_ready, repositories=("models", "tests/models")):
    """Starts inferd (retrying only if it exits before it is ready) and stops it afterwards. `ready(port)`
    tells whether the HTTP port answers ready (plain HTTP unless given); `repositories` are the
    --model-repository folders (both by default)."""
    binary = Path(os.environ.get("INFERD_BIN", DEFAULT_BIN))
    if not binary.is_file():
        pytest.fail(
            f"server binary not found at {binary}: run `cargo build --bin inferd` "
            "or set INFERD_BIN"
        )
    log_dir = tmp_path_factory.mktemp(name)
    server = None
    for attempt in range(3):
        server, last = _start_server(
            binary, log_dir / f"inferd-{attempt}.log", extra_args, ready, repositories
        )
        if server is not None:
            break
    if server is None:
        pytest.fail(
            f"inferd exited with status {last.process.returncode} before becoming "
            f"ready; log tail:\n{last.log_tail()}"
        )
    yield server
    _stop(server.process)


@pytest.fixture(scope="session")
def inferd(tmp_path_factory):
    """A running inferd server for the whole session."""
    yield from _serve(tmp_path_factory, "inferd")


@pytest.fixture(scope="session")
def inferd_explicit(tmp_path_factory):
    """An inferd server in explicit model-control mode with only `simple` loaded at start."""
    yield from _serve(
        tmp_path_factory,
        "inferd-explicit",
        ("--model-control-mode", "explicit", "--load-model", "simple"),
    )


# ------------------------------------------------------------------ clients


@pytest.fixture(scope="session")
def http_client(inferd):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=inferd.http_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def grpc_client(inferd):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=inferd.grpc_url)
    yield client
    client.close()


@dataclass
class Triton:
    """A tritonclient module (http or grpc) together with a connected client."""

    protocol: str
    module: object
    client: object

    @property
    def is_http(self):
        return self.protocol == "http"


@pytest.fixture(params=PROTOCOLS)
def triton(request):
    """Parametrizes a test over both tritonclient protocols."""
    if request.param == "http":
        import tritonclient.http as module

        client = request.getfixturevalue("http_client")
    else:
        import tritonclient.grpc as module

        client = request.getfixturevalue("grpc_client")
    return Triton(request.param, module, client)


# ------------------------------------------------------------------ references


@pytest.fixture(scope="session")
def mlp_reference():
    """numpy reference of the `mlp` model, from the weights in models/generate.py."""
    spec = importlib.util.spec_from_file_location(
        "inferd_models_generate", REPO_ROOT / "models" / "generate.py"
    )
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    w1, b1, w2, b2 = generate.mlp_weights()

    def forward(x):
        return np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2

    return forward
