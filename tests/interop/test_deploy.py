"""The deployment files in deploy/ against the real server: they parse, and what they point at exists.

The probes' paths answer 200 on a ready server, the ports are the server's, the autoscaler targets the
Deployment and asks for metrics the adapter rules serve, and those rules and the alerts name metrics the
server exposes (the Rust test `every_metric_the_deploy_files_use_is_served` checks every name in deploy/).

The S3 variant of the Deployment runs as written against a real S3-compatible store, s3s-fs (`stores.S3Store`,
installed by `make test`), holding models/mlp under the manifest's bucket and prefix (its endpoint and the cache
folder replaced, its Secret's keys taken from the template and made the store's keys), and the KServe
runtime's command and arguments start the real server (ports and /mnt/models replaced).
"""

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import DEFAULT_BIN, READY_TIMEOUT_S, REPO_ROOT, _free_ports, _stop, _tcp_open
from stores import S3Store

DEPLOY = REPO_ROOT / "deploy"
MODEL_HEALTH_PREFIXES = ("inferd_drift_", "inferd_arm_", "inferd_validation_")


def documents(name, folder="kubernetes"):
    return [d for d in yaml.safe_load_all((DEPLOY / folder / name).read_text()) if d]


def kind(docs, k):
    found = [d for d in docs if d.get("kind") == k]
    assert len(found) == 1, f"one {k}"
    return found[0]


def scrape(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as r:
        return r.read().decode()


def test_every_yaml_and_json_file_parses():
    files = list(DEPLOY.rglob("*.yaml")) + list(DEPLOY.rglob("*.json"))
    assert len(files) >= 5
    for f in files:
        if f.suffix == ".json":
            json.loads(f.read_text())
        else:
            assert list(yaml.safe_load_all(f.read_text())), f


def test_the_probes_answer_on_the_server(inferd):
    container = kind(documents("deployment.yaml"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}, "the server's default ports"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == "http"
        with urllib.request.urlopen(f"http://127.0.0.1:{inferd.http_port}{get['path']}", timeout=5) as r:
            assert r.status == 200, probe
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_the_autoscaler_scales_the_deployment_on_metrics_the_adapter_serves(inferd):
    hpa = kind(documents("hpa.yaml"), "HorizontalPodAutoscaler")
    deployment = kind(documents("deployment.yaml"), "Deployment")
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert "inferd_queue_depth" in wanted

    adapter = yaml.safe_load((DEPLOY / "kubernetes" / "prometheus-adapter.yaml").read_text())
    rules = adapter["rules"]["custom"]
    served = {rule["name"]["as"] for rule in rules}
    assert wanted <= served, f"the HPA asks for {wanted}, the adapter serves {served}"

    exposed = scrape(inferd)
    for metric in wanted:
        assert re.search(rf"^{metric}(\{{| )", exposed, re.M), f"{metric} is on the metrics page"


def test_the_alert_rules_are_well_formed():
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 4
    for r in rules:
        assert r["alert"] and r["expr"] and r["annotations"]["summary"], r
        assert r["labels"]["severity"] in ("warning", "critical"), r


def test_drift_warns_above_psi_0_2_and_pages_above_0_25_after_15_minutes():
    groups = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yaml").read_text())["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    drift = {name: r for name, r in rules.items() if "inferd_drift_psi_max" in r["expr"]}
    found = {(re.search(r">\s*([0-9.]+)\s*$", r["expr"].strip()).group(1), r["for"], r["labels"]["severity"])
             for r in drift.values()}
    assert found == {("0.2", "15m", "warning"), ("0.25", "15m", "critical")}, found
    divergence = [r for r in rules.values() if "inferd_arm_divergence" in r["expr"]]
    assert len(divergence) == 1 and divergence[0]["labels"]["severity"] == "warning", divergence


def test_the_model_health_dashboard_shows_drift_validation_and_divergence():
    board = json.loads((DEPLOY / "grafana" / "inferd-model-health.json").read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    exprs = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in ("inferd_drift_psi_max", "inferd_drift_psi", "inferd_drift_js", "inferd_drift_windows_total",
                   "inferd_validation_failures_total", "inferd_arm_divergence"):
        assert re.search(rf"\b{metric}\b", exprs), f"a panel shows {metric}"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert board["uid"] != json.loads((DEPLOY / "grafana" / "inferd-dashboard.json").read_text())["uid"]


# ------------------------------------------------------------------ helpers for the S3 and KServe files


def flags(args):
    """A container's `--flag value` (or `--flag=value`) arguments as {flag: [values]}; every inferd flag takes a
    value."""
    found = {}
    i = 0
    while i < len(args):
        arg = args[i]
        assert arg.startswith("--"), f"{arg!r} in {args}: a flag, then its value"
        if "=" in arg:
            name, value = arg.split("=", 1)
            i += 1
        else:
            assert i + 1 < len(args), f"{arg} has no value"
            name, value = arg, args[i + 1]
            i += 2
        found.setdefault(name[2:], []).append(str(value))
    return found


def one(found, flag):
    values = found.get(flag, [])
    assert len(values) == 1, f"--{flag} given once: {found}"
    return values[0]


def replaced(args, values):
    """`args` with the value of each flag in `values` ({flag: new value}) replaced."""
    out = list(args)
    for i, arg in enumerate(out):
        name = arg.split("=", 1)[0][2:] if arg.startswith("--") else None
        if name in values:
            if "=" in arg:
                out[i] = f"--{name}={values[name]}"
            else:
                out[i + 1] = str(values[name])
    return out


def s3_bucket_and_prefix(url):
    """Bucket and prefix of a repository in any of the server's S3 forms: s3://bucket/prefix,
    s3://host:port/bucket/prefix, s3://http(s)://host:port/bucket/prefix."""
    assert url.startswith("s3://"), url
    rest = url[len("s3://"):]
    for scheme in ("http://", "https://"):
        if rest.startswith(scheme):
            rest = rest[len(scheme):].split("/", 1)[1]
            break
    else:
        if ":" in rest.split("/", 1)[0]:
            rest = rest.split("/", 1)[1]
    bucket, _, prefix = rest.strip("/").partition("/")
    assert bucket, url
    return bucket, prefix.strip("/")


def dockerfile():
    return (REPO_ROOT / "Dockerfile").read_text().rsplit("\nFROM ", 1)[1]


def image_env():
    """The runtime image's ENV, which a container starts with."""
    return dict(re.findall(r"^ENV (\w+)=(\S+)$", dockerfile(), re.M))


def literal_env(container, secrets=None):
    """The container's environment: plain values, and secretKeyRef values from `secrets` ({name: {key: value}}),
    skipping optional references to Secrets that are not there."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        secret = (secrets or {}).get(ref["name"])
        if secret is None:
            assert ref.get("optional") is True, f"{var['name']} needs Secret {ref['name']}"
            continue
        env[var["name"]] = secret[ref["key"]]
    return env


def clean_environ():
    """This process' environment without anything that would steer the server (INFERD_*, AWS_*)."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("INFERD_", "AWS_"))
    } | {"NO_COLOR": "1"}


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


class Started:
    def __init__(self, process, log_path, ports):
        self.process = process
        self.log_path = log_path
        self.ports = ports  # {flag: port}

    def log_tail(self, n=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"


def start(tmp_path, argv, env, ready_url):
    """Runs `argv` (which holds `{http-port}`, `{grpc-port}`, `{metrics-port}` placeholders) on free ports until
    `ready_url` (formatted with the same ports) answers 200; retries when the server exits early (a port taken
    meanwhile). The caller stops it."""
    binary = Path(os.environ.get("INFERD_BIN", DEFAULT_BIN))
    if not binary.is_file():
        pytest.fail(f"server binary not found at {binary}: run `cargo build --bin inferd` or set INFERD_BIN")
    last = None
    for attempt in range(3):
        http, grpc, metrics = _free_ports(3)
        ports = {"http-port": http, "grpc-port": grpc, "metrics-port": metrics}
        cmd = [str(binary) if a == "{binary}" else a.format(**ports) for a in argv]
        log_path = tmp_path / f"inferd-{attempt}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        last = Started(process, log_path, ports)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if http_status(ready_url.format(**ports)) == 200 and _tcp_open(grpc):
                    return last
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        if process.poll() is None:
            _stop(process)
            pytest.fail(f"inferd not ready within {READY_TIMEOUT_S:.0f} s: {cmd}\n{last.log_tail()}")
    pytest.fail(f"inferd exited with status {last.process.returncode}: {cmd}\n{last.log_tail()}")


def s3_deployment():
    return kind(documents("deployment-s3.yaml"), "Deployment")


def s3_container():
    containers = s3_deployment()["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def secret_templates():
    """The Secrets the deploy files define, {name: {key: value}}."""
    found = {}
    for f in (DEPLOY / "kubernetes").glob("*.yaml"):
        for d in yaml.safe_load_all(f.read_text()):
            if d and d.get("kind") == "Secret":
                found[d["metadata"]["name"]] = dict(d.get("stringData") or {})
    return found


# ------------------------------------------------------------------ S3 Deployment


def test_the_s3_deployment_reads_an_s3_repository_in_poll_mode_into_a_cache_on_an_emptydir():
    container = s3_container()
    assert "command" not in container, "the image's entrypoint, `inferd serve`, runs the args"
    found = flags(container["args"])
    repository = one(found, "model-repository")
    assert repository.startswith("s3://")
    s3_bucket_and_prefix(repository)
    assert one(found, "model-control-mode") == "poll"
    assert int(one(found, "repository-poll-secs")) == 30

    cache = one(found, "model-cache-dir")
    mounts = [m for m in container["volumeMounts"] if m["mountPath"] == cache]
    assert len(mounts) == 1, f"{cache} is a mounted volume"
    assert not mounts[0].get("readOnly"), "the cache is written"
    volumes = {v["name"]: v for v in s3_deployment()["spec"]["template"]["spec"]["volumes"]}
    cache_volume = volumes[mounts[0]["name"]]
    assert "emptyDir" in cache_volume and cache_volume["emptyDir"]["sizeLimit"]
    # No PVC: the models come from the bucket.
    assert not any("persistentVolumeClaim" in v for v in volumes.values())


def test_the_s3_deployment_takes_credentials_from_the_secret_template_or_the_service_account():
    container = s3_container()
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_REGION"]["value"]

    secrets = secret_templates()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        ref = env[key]["valueFrom"]["secretKeyRef"]
        assert ref["optional"] is True, "without the Secret, the pod starts with the service account's role"
        assert ref["name"] in secrets, f"a template of Secret {ref['name']} is in deploy/kubernetes"
        assert ref["key"] in secrets[ref["name"]], f"Secret {ref['name']} has key {ref['key']}"
    template = secrets[env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"]]
    assert all(str(v).startswith("REPLACE_ME") for v in template.values()), "placeholders, clearly marked"

    # IRSA: the pods run as a ServiceAccount with the role annotation. EKS' webhook adds the token volume and
    # AWS_ROLE_ARN / AWS_WEB_IDENTITY_TOKEN_FILE only where the pod does not already have them.
    pod = s3_deployment()["spec"]["template"]["spec"]
    account = kind(documents("deployment-s3.yaml"), "ServiceAccount")
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    role = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
    assert re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/.+", role), role
    assert not {"AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE"} & set(env)
    assert "aws-iam-token" not in {v["name"] for v in pod["volumes"]}


def test_the_s3_deployment_matches_the_deployment_but_for_the_repository():
    docs, s3_docs = documents("deployment.yaml"), documents("deployment-s3.yaml")
    base, s3 = kind(docs, "Deployment"), kind(s3_docs, "Deployment")
    assert s3["metadata"] == base["metadata"], "the same Deployment: hpa.yaml scales either"
    assert kind(s3_docs, "Service") == kind(docs, "Service")
    assert s3["spec"]["selector"] == base["spec"]["selector"]
    assert s3["spec"]["template"]["metadata"] == base["spec"]["template"]["metadata"]

    pod, base_pod = s3["spec"]["template"]["spec"], base["spec"]["template"]["spec"]
    assert pod["securityContext"] == base_pod["securityContext"]
    assert pod["terminationGracePeriodSeconds"] == base_pod["terminationGracePeriodSeconds"]
    c, b = pod["containers"][0], base_pod["containers"][0]
    probes = ("startupProbe", "livenessProbe", "readinessProbe")
    for field in ("image", "ports", *probes, "lifecycle", "securityContext"):
        assert c[field] == b[field], field
    for resource in ("cpu", "memory"):
        assert c["resources"]["requests"][resource] == b["resources"]["requests"][resource]
        assert c["resources"]["limits"][resource] == b["resources"]["limits"][resource]
    env = {e["name"]: e for e in c["env"]}
    for var in b["env"]:
        if var["name"] != "INFERD_MODEL_REPOSITORY":
            assert env.get(var["name"]) == var, var["name"]


@pytest.fixture(scope="module")
def s3_inferd(tmp_path_factory):
    """The S3 Deployment's container as written, its store replaced by a real S3-compatible one (s3s-fs) holding
    models/mlp under the manifest's bucket and prefix, with the Secret template's keys as its credentials, its
    cache folder by a temporary one, its ports by free ones."""
    container = s3_container()
    args = container["args"]
    bucket, prefix = s3_bucket_and_prefix(one(flags(args), "model-repository"))
    env = clean_environ() | image_env() | literal_env(container, secret_templates())
    tmp = tmp_path_factory.mktemp("inferd-s3")
    store = S3Store(tmp / "s3", access_key=env["AWS_ACCESS_KEY_ID"], secret_key=env["AWS_SECRET_ACCESS_KEY"])
    try:
        store.upload_model(store.bucket(bucket), prefix, REPO_ROOT / "models" / "mlp")
        cache = tmp / "cache"
        cache.mkdir()
        args = replaced(args, {"model-repository": store.url(bucket, prefix), "model-cache-dir": str(cache)})
        argv = ["{binary}", "serve", *args,
                "--http-port", "{http-port}", "--grpc-port", "{grpc-port}", "--metrics-port", "{metrics-port}"]
        path = container["readinessProbe"]["httpGet"]["path"]
        server = start(tmp, argv, env, "http://127.0.0.1:{http-port}" + path)
    except BaseException:
        store.stop()
        raise
    yield server, store, cache, bucket, prefix
    _stop(server.process)
    store.stop()


def test_the_s3_deployment_serves_the_bucket_through_the_real_server(s3_inferd):
    server, store, cache, bucket, prefix = s3_inferd
    container = s3_container()
    http = server.ports["http-port"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert http_status(f"http://127.0.0.1:{http}{container[probe]['httpGet']['path']}") == 200, probe
    assert http_status(f"http://127.0.0.1:{http}/v2/models/mlp/ready") == 200, server.log_tail()

    # Every file of the model in the bucket (under the manifest's prefix) downloaded, as it is, into one
    # copy in the cache folder.
    listed = store.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/mlp/").get("Contents", [])
    files = {o["Key"][len(f"{prefix}/mlp/"):] for o in listed}
    assert files == {"config.pbtxt", "1/model.onnx", "1/profile.json"}, listed
    copies = [p.parent.parent for p in cache.glob("**/mlp/*/1/model.onnx")]
    assert len(copies) == 1, f"one copy of the model in the cache: {sorted(cache.rglob('*'))}"
    for name in files:
        assert (copies[0] / name).read_bytes() == (REPO_ROOT / "models" / "mlp" / name).read_bytes(), name


def test_the_alerts_name_metrics_the_servers_expose(inferd, s3_inferd):
    """Every metric the alert rules name is on the metrics page of the local-folder server or, for the
    repository sync metrics that exist only with a remote repository, of the S3 one."""
    server = s3_inferd[0]
    with urllib.request.urlopen(f"http://127.0.0.1:{server.ports['metrics-port']}/metrics", timeout=5) as r:
        s3_page = r.read().decode()
    pages = scrape(inferd) + s3_page
    text = (DEPLOY / "prometheus" / "alerts.yaml").read_text()
    names = set(re.findall(r"\b(?:inferd|nv_inference)_[a-z0-9_]+", text))
    assert {"inferd_repository_sync_failures_total", "inferd_repository_last_sync_timestamp_seconds"} <= names
    # The model-health series exist only for versions with a drift profile, a complete window or a traffic
    # split: tests/interop/test_drift.py checks them on servers that have those.
    health = {n for n in names if n.startswith(MODEL_HEALTH_PREFIXES)}
    assert {"inferd_drift_psi_max", "inferd_arm_divergence"} <= health
    for name in names - health:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        served = re.search(rf"^# TYPE ({name}|{base}) ", pages, re.M)
        assert served, f"alerts.yaml uses {name}, which is not served"

    def sample(name):
        found = re.search(rf'^{name}\{{repository="s3://[^"]+"\}} (\S+)$', s3_page, re.M)
        assert found, f"{name} for the S3 repository:\n{s3_page}"
        return float(found.group(1))

    assert sample("inferd_repository_sync_failures_total") == 0
    last = sample("inferd_repository_last_sync_timestamp_seconds")
    assert abs(time.time() - last) < 600, "the stale alert's expression is below 600"


# ------------------------------------------------------------------ KServe


def runtime():
    docs = documents("clusterservingruntime.yaml", "kserve")
    found = kind(docs, "ClusterServingRuntime")
    assert found["apiVersion"] == "serving.kserve.io/v1alpha1"
    return found


def runtime_container():
    containers = runtime()["spec"]["containers"]
    named = [c for c in containers if c["name"] == "kserve-container"]
    assert len(named) == 1, "KServe finds the model server by the name kserve-container"
    return named[0]


def test_the_serving_runtime_declares_what_kserve_needs():
    spec = runtime()["spec"]
    onnx = [f for f in spec["supportedModelFormats"] if f["name"] == "onnx"]
    assert onnx and onnx[0]["autoSelect"] is True and onnx[0]["version"] == "1"
    assert {"v2", "grpc-v2"} <= set(spec["protocolVersions"])

    container = runtime_container()
    deployment = kind(documents("deployment.yaml"), "Deployment")
    assert container["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    # The image's entrypoint, spelled out: `inferd serve`.
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", dockerfile(), re.M).group(1))
    assert container["command"] + container["args"][:1] == entrypoint

    found = flags(container["args"][1:])
    assert one(found, "model-repository") == "/mnt/models", "where KServe's storage initializer puts the model"
    http, grpc, metrics = (int(one(found, f)) for f in ("http-port", "grpc-port", "metrics-port"))
    assert (http, grpc) == (8080, 9000), "KServe's ports"
    declared = {p["containerPort"] for p in container.get("ports", [])}
    assert declared and declared <= {http, grpc}, f"declared ports {declared} are ones inferd listens on"

    probe = container["readinessProbe"]["httpGet"]
    assert probe["path"] == "/v2/health/ready" and int(probe["port"]) == http
    annotations = spec["annotations"]
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert int(annotations["prometheus.kserve.io/port"]) == metrics
    assert annotations["prometheus.kserve.io/path"] == "/metrics"
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    if container.get("securityContext", {}).get("readOnlyRootFilesystem"):
        assert "/tmp" in mounts, "the server stages uploaded model files under /tmp"


def test_the_serving_runtime_starts_the_real_server(tmp_path):
    """The runtime's command and args, with /mnt/models laid out as the storage initializer leaves it for the
    example InferenceService (the mlp model's folder inside) and the ports replaced by free ones."""
    container = runtime_container()
    mnt = tmp_path / "mnt" / "models"
    shutil.copytree(REPO_ROOT / "models" / "mlp", mnt / "mlp")
    assert container["command"][0].rsplit("/", 1)[-1] == "inferd"
    args = [str(mnt) if a == "/mnt/models" else a for a in container["args"]]
    args = args[:1] + replaced(args[1:], {f: "{" + f + "}" for f in ("http-port", "grpc-port", "metrics-port")})
    ports_in_args = {int(v[0]): f for f, v in flags(container["args"][1:]).items() if f.endswith("-port")}
    probe = container["readinessProbe"]["httpGet"]
    env = clean_environ() | image_env() | literal_env(container)
    server = start(tmp_path, ["{binary}", *args], env,
                   "http://127.0.0.1:{" + ports_in_args[int(probe["port"])] + "}" + probe["path"])
    try:
        http = server.ports["http-port"]
        assert http_status(f"http://127.0.0.1:{http}{probe['path']}") == 200
        assert http_status(f"http://127.0.0.1:{http}/v2/models/mlp/ready") == 200, server.log_tail()
        annotations = runtime()["spec"]["annotations"]
        metrics = server.ports[ports_in_args[int(annotations["prometheus.kserve.io/port"])]]
        path = annotations["prometheus.kserve.io/path"]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}{path}", timeout=5) as r:
            assert "nv_inference_request_success" in r.read().decode()
    finally:
        _stop(server.process)


def test_the_inference_service_runs_on_the_runtime():
    isvc = kind(documents("inferenceservice.yaml", "kserve"), "InferenceService")
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    model = isvc["spec"]["predictor"]["model"]
    spec = runtime()["spec"]
    assert model["runtime"] == runtime()["metadata"]["name"]
    assert model["modelFormat"]["name"] in {f["name"] for f in spec["supportedModelFormats"]}
    assert model["protocolVersion"] in spec["protocolVersions"]
    assert model["storageUri"].startswith("s3://")


def test_the_readme_describes_every_file():
    readme = (DEPLOY / "README.md").read_text()
    for f in sorted(DEPLOY.rglob("*")):
        if f.is_file() and f.name != "README.md":
            assert f"`{f.relative_to(DEPLOY).as_posix()}`" in readme, f
