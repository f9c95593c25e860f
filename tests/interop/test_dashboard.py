"""`GET /dashboard` in a real headless Chromium (Debian's, driven by Playwright; no browser is downloaded).

A temporary repository holds `mlp` with a reference profile for version 1 (inputs at the standard normal's
deciles, outputs at the deciles of the model's answers to such rows) and `drift.window` 200, and a version 2
without a profile. Version 1 is sent one window of normal rows, then one with input features 3, 17 and 40
shifted by +1; the page must then show those among the worst features, with their PSI, as SVG histograms —
with no script error, no request to another host, and a screenshot for a person to look at.

`make test` installs Chromium (scripts/setup_browser.sh) and Playwright (scripts/requirements.txt) and sets
INFERD_REQUIRE_FIXTURES: there, a missing one fails the test instead of skipping it.
"""

import json
import os
import shutil
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from conftest import REPO_ROOT
from stores import Inferd, wait_for

CHROMIUM = Path("/usr/bin/chromium")
REQUIRED = bool(os.environ.get("INFERD_REQUIRE_FIXTURES"))
WINDOW = 200
BATCH = 50
SHIFTED = (3, 17, 40)
# The standard normal's deciles: each bin holds a tenth of normal rows.
NORMAL_DECILES = [-1.2816, -0.8416, -0.5244, -0.2533, 0.0, 0.2533, 0.5244, 0.8416, 1.2816]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture
def browser_launcher():
    """Playwright's Chromium launcher for /usr/bin/chromium; missing pieces skip, or fail under make test."""

    def missing(why):
        if REQUIRED:
            pytest.fail(f"{why} (make test installs it)", pytrace=False)
        pytest.skip(f"{why}: run scripts/setup_browser.sh and make setup")

    if not CHROMIUM.is_file():
        missing(f"{CHROMIUM} not found")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright missing from .venv")
    with sync_playwright() as p:
        yield p.chromium


def feature(values, edges):
    """One feature's profile entry: shares of the bins `edges` make (a value on an edge is in the lower bin)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return {
        "edges": [float(e) for e in edges],
        "shares": [float(c) for c in counts / counts.sum()],
        "mean": float(values.mean()), "std": float(values.std()),
        "min": float(values.min()), "max": float(values.max()), "nan_share": 0.0,
    }


def tensor(name, columns, edges_of):
    return {
        "name": name, "kind": "elements",
        "features": [dict(name=str(i), **feature(c, edges_of(c))) for i, c in enumerate(columns.T)],
    }


def make_repository(root, forward):
    """mlp version 1 with a profile, version 2 without; labels and a 90/10 split for the traffic line."""
    model = root / "mlp"
    shutil.copytree(REPO_ROOT / "models" / "mlp", model)
    shutil.copytree(model / "1", model / "2")
    (model / "2" / "profile.json").unlink(missing_ok=True)  # the shipped profile is version 1's alone
    config = (model / "config.pbtxt").read_text()
    params = {"drift.window": str(WINDOW), "label.stable": "1", "label.canary": "2", "weight.1": "90",
              "weight.2": "10"}
    config += "version_policy: { all: {} }\n"
    config += "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in params.items())
    (model / "config.pbtxt").write_text(config)
    reference = np.random.default_rng(1).standard_normal((5000, 64)).astype(np.float32)
    answers = forward(reference).astype(np.float32)
    profile = {
        "format": "inferd-profile/1", "model": "mlp", "rows": len(reference), "source": "standard normal rows",
        "inputs": [tensor("INPUT", reference, lambda c: NORMAL_DECILES)],
        "outputs": [tensor("OUTPUT", answers, lambda c: np.quantile(c, np.linspace(0.1, 0.9, 9)))],
    }
    (model / "1" / "profile.json").write_text(json.dumps(profile))
    return model


def infer(server, rows):
    body = {"inputs": [{"name": "INPUT", "shape": list(rows.shape), "datatype": "FP32",
                        "data": rows.ravel().tolist()}]}
    status, answer = server.post("/v2/models/mlp/versions/1/infer", body)
    assert status == 200, answer


def drift(server):
    status, body = server.get("/v2/models/mlp/versions/1/drift")
    assert status == 200, body
    return json.loads(body)


def send_windows(server):
    """A window of normal rows, then one with the SHIFTED features moved by +1; returns the latest report."""
    rng = np.random.default_rng(7)
    for shift in (0.0, 1.0):
        rows = rng.standard_normal((WINDOW, 64)).astype(np.float32)
        rows[:, SHIFTED] += shift
        for start in range(0, WINDOW, BATCH):
            infer(server, rows[start:start + BATCH])
    return wait_for(lambda: (d := drift(server))["windows_completed"] == 2 and d, 10, "two drift windows")


def test_the_dashboard_shows_drifted_features_in_a_real_browser(
    tmp_path, browser_launcher, mlp_reference
):
    repo = tmp_path / "models"
    repo.mkdir()
    make_repository(repo, mlp_reference)
    with Inferd(tmp_path, [str(repo)], name="inferd-dashboard") as server:
        started = time.monotonic()
        report = send_windows(server)
        psi = {(t["name"], f["name"]): f["psi"] for t in report["inputs"] + report["outputs"]
               for f in t["features"]}
        worst = sorted(psi, key=psi.get, reverse=True)[:5]
        assert ("INPUT", "3") in worst, f"the shifted feature is not among the worst: {worst}"

        console_errors, page_errors, requests = [], [], []
        context = browser_launcher.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.new_page()
            page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            context.on("request", lambda r: requests.append(r.url))
            # The server measures rates over a second at least: the first view must be that far from start-up
            # for the second to be measured from it.
            time.sleep(max(0.0, 1.1 - (time.monotonic() - started)))
            response = page.goto(server.http + "/dashboard", wait_until="load")

            assert response.status == 200
            assert response.headers["content-type"].startswith("text/html")
            assert "default-src 'none'" in response.headers["content-security-policy"]
            assert page.locator("script").count() == 0

            # The model, both versions, the split and labels, version 2's reason for having no drift.
            section = page.locator("section.model", has_text="mlp")
            assert section.locator(".badge.ready").count() == 1
            text = section.inner_text()
            assert "split version 1 90 % · version 2 10 %" in text
            assert "stable → version 1" in text and "canary → version 2" in text
            assert "version 2 of model 'mlp' has no reference profile" in text
            assert "since start-up" in text, "the first view measures the rate from start-up"
            assert "2 completed" in text

            # The drifted feature among the worst, with the PSI /drift reports, drawn as an SVG histogram.
            captions = page.locator("figure.feature figcaption").all_inner_texts()
            assert len(captions) == 5, captions
            input3 = [c for c in captions if c.startswith("input INPUT · feature 3\n")]
            assert input3, captions
            shown_psi = float(input3[0].split("PSI ")[1].split()[0])
            assert shown_psi == pytest.approx(psi[("INPUT", "3")], rel=0.01, abs=0.001)
            assert shown_psi > 0.25
            for name in ("17", "40"):
                assert any(c.startswith(f"input INPUT · feature {name}\n") for c in captions), captions
            figure = page.locator("figure.feature", has_text="INPUT · feature 3").first
            assert figure.locator("svg rect.ref").count() == 10
            assert figure.locator("svg rect.live").count() == 10
            box = figure.locator("svg").bounding_box()
            assert box and box["width"] > 100 and box["height"] > 40
            assert page.locator(".legend", has_text="reference").first.is_visible()

            screenshot = tmp_path / "dashboard.png"
            page.screenshot(path=str(screenshot), full_page=True)
            print(f"dashboard screenshot: {screenshot}")

            # A second view, a second later, measures the rate since the first.
            time.sleep(1.1)
            assert page.reload().status == 200
            assert "since the previous view" in page.locator("section.model").first.inner_text()

            assert not console_errors, console_errors
            assert not page_errors, page_errors
            own = urlsplit(server.http).netloc
            assert requests and all(urlsplit(u).netloc == own for u in requests), requests
        finally:
            context.close()
