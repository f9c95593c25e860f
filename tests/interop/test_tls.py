"""TLS on HTTP and gRPC, client certificates, and the admin token, checked with tritonclient's own SSL
options (the way Triton users connect) and Python's ssl module.

The certificates are test-only fixtures in tests/tls/ (regenerate with tests/tls/make-certs.sh)."""

import http.client
import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import DEFAULT_BIN, REPO_ROOT, _serve

CERTS = REPO_ROOT / "tests" / "tls"
CA = str(CERTS / "ca.pem")
TOKEN = "tls-admin-token"
# Lower case: gRPC metadata keys must be (HTTP headers may be either).
ADMIN = {"authorization": f"Bearer {TOKEN}"}


def _context(cert=None):
    ctx = ssl.create_default_context(cafile=CA)
    if cert:
        ctx.load_cert_chain(str(CERTS / f"{cert}.pem"), str(CERTS / f"{cert}.key"))
    return ctx


def _https_ready(cert=None):
    def ready(port):
        try:
            with urllib.request.urlopen(
                f"https://localhost:{port}/v2/health/ready", timeout=2, context=_context(cert)
            ) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    return ready


def _tls_args(*extra, token=True):
    return (
        "--tls-cert", str(CERTS / "server.pem"),
        "--tls-key", str(CERTS / "server.key"),
        "--model-control-mode", "explicit",
        "--load-model", "simple",
        *(("--admin-token", TOKEN) if token else ()),
        *extra,
    )


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    yield from _serve(tmp_path_factory, "inferd-tls", _tls_args(), _https_ready())


@pytest.fixture(scope="module")
def tls_tokenless_server(tmp_path_factory):
    yield from _serve(tmp_path_factory, "inferd-tls-tokenless", _tls_args(token=False), _https_ready())


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory):
    yield from _serve(
        tmp_path_factory,
        "inferd-mtls",
        _tls_args("--tls-client-ca", CA),
        _https_ready("client"),
    )


def _http_client(server, cert=None):
    options = {"ca_certs": CA}
    if cert:
        options.update(certfile=str(CERTS / f"{cert}.pem"), keyfile=str(CERTS / f"{cert}.key"))
    return httpclient.InferenceServerClient(
        url=f"localhost:{server.http_port}", ssl=True, ssl_options=options
    )


def _grpc_client(server, cert=None):
    return grpcclient.InferenceServerClient(
        url=f"localhost:{server.grpc_port}",
        ssl=True,
        root_certificates=CA,
        private_key=str(CERTS / f"{cert}.key") if cert else None,
        certificate_chain=str(CERTS / f"{cert}.pem") if cert else None,
    )


def _add_sub(mod, client, headers=None):
    """`simple` adds and subtracts two INT32 [1,16] tensors; returns the outputs and checks them."""
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    inputs = [mod.InferInput("INPUT0", [1, 16], "INT32"), mod.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer("simple", inputs, headers=headers)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


# ------------------------------------------------------------------ TLS


def test_http_over_tls_serves_tritonclient(tls_server):
    client = _http_client(tls_server)
    try:
        assert client.is_server_ready()
        assert client.get_server_metadata()["name"] == "inferd"
        _add_sub(httpclient, client)
    finally:
        client.close()


def test_grpc_over_tls_serves_tritonclient(tls_server):
    client = _grpc_client(tls_server)
    try:
        assert client.is_server_ready()
        _add_sub(grpcclient, client)
    finally:
        client.close()


def test_a_tls_port_answers_no_plaintext(tls_server):
    # The answer is a TLS alert, which is no HTTP status line.
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{tls_server.http_port}/v2/health/ready", timeout=5)
    client = grpcclient.InferenceServerClient(url=f"localhost:{tls_server.grpc_port}")
    try:
        with pytest.raises(InferenceServerException):
            client.is_server_live(client_timeout=5)
    finally:
        client.close()


def test_a_client_that_does_not_trust_the_server_refuses_it(tls_server):
    ctx = ssl.create_default_context(cafile=str(CERTS / "other-ca.pem"))
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(
            f"https://localhost:{tls_server.http_port}/v2/health/ready", timeout=5, context=ctx
        )


def test_metrics_stay_plain_http_for_in_cluster_scrapers(tls_server):
    with urllib.request.urlopen(f"http://127.0.0.1:{tls_server.metrics_port}/metrics", timeout=5) as r:
        assert b"nv_inference_request_success" in r.read()


# ------------------------------------------------------------------ admin token over TLS


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_admin_requests_over_tls_need_the_bearer_token(tls_server, protocol):
    mod, client = (
        (httpclient, _http_client(tls_server))
        if protocol == "http"
        else (grpcclient, _grpc_client(tls_server))
    )
    try:
        with pytest.raises(InferenceServerException, match="Bearer"):
            client.load_model("mlp")
        with pytest.raises(InferenceServerException, match="Bearer"):
            client.load_model("mlp", headers={"authorization": "Bearer wrong"})
        assert not client.is_model_ready("mlp")
        client.load_model("mlp", headers=ADMIN)
        assert client.is_model_ready("mlp")
        with pytest.raises(InferenceServerException, match="Bearer"):
            client.unload_model("mlp")
        assert client.is_model_ready("mlp")
        client.unload_model("mlp", headers=ADMIN)
        assert not client.is_model_ready("mlp")
        # Inference itself needs no token.
        _add_sub(mod, client)
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_without_a_token_admin_requests_over_tls_are_accepted_from_loopback(tls_tokenless_server, protocol):
    """The client's address is read from TLS connections too: from this host, admin requests need no token."""
    client = (
        _http_client(tls_tokenless_server)
        if protocol == "http"
        else _grpc_client(tls_tokenless_server)
    )
    try:
        client.load_model("mlp")
        assert client.is_model_ready("mlp")
        client.unload_model("mlp")
        assert not client.is_model_ready("mlp")
    finally:
        client.close()


def test_traffic_changes_over_tls_need_the_bearer_token(tls_server):
    url = f"https://localhost:{tls_server.http_port}/v2/models/simple/traffic"
    body = json.dumps({"weights": {"1": 100}}).encode()

    def put(headers):
        req = urllib.request.Request(url, data=body, method="PUT", headers=headers)
        return urllib.request.urlopen(req, timeout=5, context=_context())

    with pytest.raises(urllib.error.HTTPError) as refused:
        put({"Content-Type": "application/json"})
    assert refused.value.code == 401
    assert "Bearer" in json.loads(refused.value.read())["error"]
    with put({"Content-Type": "application/json", **ADMIN}) as ok:
        assert ok.status == 200


# ------------------------------------------------------------------ client certificates


def test_a_client_with_a_certificate_from_the_ca_is_served(mtls_server):
    http = _http_client(mtls_server, cert="client")
    grpc = _grpc_client(mtls_server, cert="client")
    try:
        _add_sub(httpclient, http)
        _add_sub(grpcclient, grpc)
    finally:
        http.close()
        grpc.close()


@pytest.mark.parametrize("cert", [None, "rogue-client"], ids=["no-certificate", "other-ca"])
def test_a_client_without_an_accepted_certificate_is_refused(mtls_server, cert):
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        with urllib.request.urlopen(
            f"https://localhost:{mtls_server.http_port}/v2/health/ready",
            timeout=5,
            context=_context(cert),
        ) as resp:
            resp.read()
    client = _grpc_client(mtls_server, cert=cert)
    try:
        with pytest.raises(InferenceServerException):
            client.is_server_live(client_timeout=5)
    finally:
        client.close()
    # The refusals left the server serving.
    _add_sub(httpclient, _http_client(mtls_server, cert="client"))


def test_the_server_refuses_to_start_with_an_unreadable_key(tmp_path):
    missing = tmp_path / "missing.key"
    out = subprocess.run(
        [
            os.environ.get("INFERD_BIN", str(DEFAULT_BIN)), "serve", "--model-repository", "models",
            "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
            "--tls-cert", str(CERTS / "server.pem"), "--tls-key", str(missing),
        ],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0
    assert "TLS key" in out.stderr + out.stdout and str(missing) in out.stderr + out.stdout
