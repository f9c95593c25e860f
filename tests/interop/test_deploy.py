"""The deployment files in deploy/ against the real server: they parse, and what they point at exists.

The probes' paths answer 200 on a ready server, the ports are the server's, the autoscaler targets the
Deployment and asks for metrics the adapter rules serve, and those rules and the alerts name metrics the
server exposes (the Rust test `every_metric_the_deploy_files_use_is_served` checks every name in deploy/).
"""

import json
import re
import urllib.request
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def documents(name):
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / name).read_text()) if d]


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
