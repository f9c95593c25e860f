"""The container image without a Docker engine: the Dockerfile lints clean with hadolint, its build and run
steps work (scripts/docker-check.sh runs them outside Docker), and the image agrees with deploy/kubernetes
and the README (name and tag, ports, user, probes, model volume).
"""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def hadolint():
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint is in scripts/requirements.txt: run scripts/setup.sh"
    return found


def runtime_stage():
    return DOCKERFILE.rsplit("\nFROM ", 1)[1]


def deployment():
    docs = yaml.safe_load_all((REPO / "deploy/kubernetes/deployment.yaml").read_text())
    return next(d for d in docs if d and d["kind"] == "Deployment")


def test_hadolint_finds_nothing():
    r = subprocess.run([hadolint(), "--no-color", "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_hadolint_ignores_only_apt_version_pinning():
    ignored = re.findall(r"#\s*hadolint ignore=(\S+)", DOCKERFILE)
    assert set(ignored) <= {"DL3008"}, ignored


def test_the_build_and_run_steps_work_outside_docker():
    r = subprocess.run(["scripts/docker-check.sh"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-4000:]
    assert "docker-check: ok" in r.stdout


def test_the_image_is_what_deploy_and_the_readme_name():
    version = tomllib.loads((REPO / "Cargo.toml").read_text())["package"]["version"]
    image = f"ghcr.io/inferd/inferd:{version}"
    container = deployment()["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == image
    assert f"docker build -t {image} ." in (REPO / "README.md").read_text()
    assert image in (REPO / "deploy/README.md").read_text()


def test_ports_user_probes_and_volume_match_the_deployment():
    stage = runtime_stage()
    spec = deployment()["spec"]["template"]["spec"]
    container = spec["containers"][0]

    exposed = {int(p) for p in re.search(r"^EXPOSE (.+)$", stage, re.M).group(1).split()}
    assert exposed == {p["containerPort"] for p in container["ports"]} == {8000, 8001, 8002}

    uid, gid = map(int, re.search(r"^USER (\d+):(\d+)$", stage, re.M).groups())
    assert re.search(rf"useradd .*--uid {uid} --gid {gid}", stage)
    assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (uid, gid)
    assert spec["securityContext"]["runAsNonRoot"] is True

    healthcheck = re.search(r"^HEALTHCHECK .*\n?.*CMD (.+)$", stage, re.M).group(1)
    assert "http://127.0.0.1:8000/v2/health/ready" in healthcheck
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/v2/health/live"

    # The image serves /models (its volume); the pod mounts the repository there.
    assert re.search(r'^VOLUME \["/models"\]$', stage, re.M)
    assert re.search(r"^ENV INFERD_MODEL_REPOSITORY=/models$", stage, re.M)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["models"] == "/models"
    # A read-only root filesystem leaves /tmp for model loads that send their files.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert mounts["tmp"] == "/tmp"

    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/inferd", "serve"\]$', stage, re.M)
    assert re.search(r"^STOPSIGNAL SIGTERM$", stage, re.M)
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"  # coreutils: docker-check.sh


def test_dockerignore_keeps_the_context_small():
    lines = [l.strip() for l in (REPO / ".dockerignore").read_text().splitlines()]
    assert lines.index("*") < lines.index("!server"), "an allow-list"
    assert {"models/minilm", "models/minilm_onnx", "models/all-MiniLM-L6-v2"} <= set(lines), "git-ignored weights stay out"
