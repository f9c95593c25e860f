#!/usr/bin/env python3
"""Drift monitoring, shown live: sends `mlp` traffic like its reference profile, then traffic drifting more and
more (a few inputs shifted by a growing number of standard deviations), and prints, as each drift window
completes, the worst PSI over the model's features and the features that drift most.

    .venv/bin/python scripts/drift_demo.py                      # starts its own server (about 20 s)
    .venv/bin/python scripts/drift_demo.py --url localhost:8000 # a running server whose mlp has a profile
    .venv/bin/python scripts/drift_demo.py --hold 300           # then keeps its server up for the dashboard

Without --url it serves a temporary copy of models/mlp with its shipped profile (models/mlp/1/profile.json,
or models/mlp/profile.json; made by `inferd profile` from 5000 N(0,1) rows if neither exists) and a window of
--window rows, with the server binary of INFERD_BIN, target/release or target/debug.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient

ROOT = Path(__file__).resolve().parents[1]
MLP = ROOT / "models" / "mlp"
sys.path.insert(0, str(ROOT / "tests" / "interop"))
from conftest import _free_ports  # noqa: E402
SHIFTED = (3, 17, 40)
STAGES = (0.0, 0.0, 0.25, 0.5, 1.0, 2.0)  # shift of the drifting inputs, in reference standard deviations


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def binary():
    for candidate in (os.environ.get("INFERD_BIN"), ROOT / "target" / "release" / "inferd",
                      ROOT / "target" / "debug" / "inferd"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    sys.exit("no inferd binary: run `cargo build --bin inferd` (or make build), or set INFERD_BIN")


def start_server(workdir, window):
    """A server over a copy of models/mlp with its shipped profile and `drift.window` = window."""
    exe = binary()
    repo = workdir / "repo"
    model = repo / "mlp"
    (model / "1").mkdir(parents=True)
    shutil.copy(MLP / "1" / "model.onnx", model / "1" / "model.onnx")
    config = (MLP / "config.pbtxt").read_text()
    config += f'parameters {{ key: "drift.window" value {{ string_value: "{window}" }} }}\n'
    (model / "config.pbtxt").write_text(config)
    shipped = [p for p in (MLP / "1" / "profile.json", MLP / "profile.json") if p.is_file()]
    if shipped:
        shutil.copy(shipped[0], model / "1" / "profile.json")
        print(f"profile: {shipped[0].relative_to(ROOT)}")
    else:
        data = workdir / "reference.npy"
        np.save(data, np.random.default_rng(1).standard_normal((5000, 64)).astype(np.float32))
        subprocess.run([str(exe), "profile", "--model-repository", str(repo), "--model", "mlp", "--data", str(data)],
                       check=True, cwd=ROOT)
        print("profile: made by `inferd profile` from 5000 N(0,1) rows (models/mlp ships none)")
    http, grpc, metrics = _free_ports(3)
    log = open(workdir / "inferd.log", "wb")
    process = subprocess.Popen(
        [str(exe), "serve", "--model-repository", str(repo), "--http-port", str(http), "--grpc-port", str(grpc),
         "--metrics-port", str(metrics)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    url = f"127.0.0.1:{http}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"inferd exited with {process.returncode}:\n{(workdir / 'inferd.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return process, url
        except OSError:
            pass
        time.sleep(0.2)
    process.terminate()
    sys.exit("inferd did not become ready within 60 s")


def worst(report, n=3):
    features = [(f["psi"], t["name"], f["name"]) for t in report["inputs"] + report["outputs"]
                for f in t["features"] if f["psi"] is not None]
    return sorted(features, reverse=True)[:n]


def run(url, model):
    status, report = get_json(f"http://{url}/v2/models/{model}/drift")
    if status != 200:
        sys.exit(f"GET /v2/models/{model}/drift: {status} {report.get('error', report)}")
    window = report["window_rows"]
    rows_per_window = int(np.ceil(window / report["sample"]))
    (inputs,) = [t for t in report["inputs"] if t["kind"] == "elements"]
    # Traffic like the reference: each input drawn from a normal with the reference's mean and spread (its
    # central 80% between the first and last decile edges).
    edges = np.array([f["edges"] for f in inputs["features"]])
    mean = edges[:, 4]
    std = (edges[:, 8] - edges[:, 0]) / (2 * 1.2816)
    width = len(inputs["features"])
    shifted = [f for f in SHIFTED if f < width]
    print(f"model {model}: window {window} rows, sample {report['sample']}, reference {report['reference_rows']} "
          f"rows; inputs {shifted} will drift")
    print(f"dashboard: http://{url}/dashboard (drift per version);  GET http://{url}/v2/models/{model}/drift")
    client = httpclient.InferenceServerClient(url=url)
    rng = np.random.default_rng(7)
    done = report["windows_completed"]
    for shift in STAGES:
        x = rng.standard_normal((rows_per_window, width)) * std + mean
        x[:, shifted] += shift * std[shifted]
        x = x.astype(np.float32)
        for start in range(0, len(x), 64):
            chunk = x[start:start + 64]
            i = httpclient.InferInput(inputs["name"], list(chunk.shape), "FP32")
            i.set_data_from_numpy(chunk)
            client.infer(model, [i])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            _, report = get_json(f"http://{url}/v2/models/{model}/drift")
            if report["windows_completed"] > done:
                break
            time.sleep(0.1)
        done = report["windows_completed"]
        top = ", ".join(f"{t}[{f}] {p:.3f}" for p, t, f in worst(report))
        verdict = "DRIFT" if report["psi_max"] > 0.25 else "moderate" if report["psi_max"] > 0.1 else "stable"
        print(f"window {done:3d}  shift {shift:4.2f} sd  psi_max {report['psi_max']:.3f} ({verdict:8s})  worst: {top}")
    client.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="host:port of a running server's HTTP endpoint (default: start one)")
    p.add_argument("--model", default="mlp")
    p.add_argument("--window", type=int, default=500, help="drift.window of the server started here")
    p.add_argument("--hold", type=float, default=0, help="seconds to keep the server started here up at the end")
    args = p.parse_args()
    if args.url:
        run(args.url, args.model)
        return
    with tempfile.TemporaryDirectory(prefix="inferd-drift-demo-") as tmp:
        process, url = start_server(Path(tmp), args.window)
        try:
            run(url, args.model)
            if args.hold > 0:
                print(f"serving for {args.hold:.0f} s more: http://{url}/dashboard")
                time.sleep(args.hold)
        finally:
            process.terminate()
            process.wait(timeout=15)


if __name__ == "__main__":
    main()
