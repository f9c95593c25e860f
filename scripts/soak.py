#!/usr/bin/env python3
"""Soak: mixed traffic against a release inferd for a long run, with a model reload every minute.

Clients on both protocols (tritonclient HTTP and gRPC) send good requests to every example model, and now and
then a bad one (unknown model, wrong shape, wrong datatype); every minute one model is reloaded through the
repository API while traffic flows. Every good answer is checked: `simple` exactly (sums and differences), the
others against the first answer the model gave for the same input (the same weights must give the same
numbers across reloads). Bad requests must be refused with a client error.

The server's resident memory is sampled every 10 s. Passes when no good request failed or came back wrong, no
bad request was accepted, and resident memory at the end is within --rss-slack of where it stood after the
warm-up. Writes the "Soak" section of benches/RESULTS.md with --record.

    scripts/soak.py --minutes 30 --record
"""
import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_common import ROOT, replace_section, start  # noqa: E402

SENTENCES = ["A soak test runs for a long time.", "Résumé: naïve café ☕", "def f(x): return x * 2"]
RELOADED = ["simple", "mlp", "mlp_candle", "minilm_onnx", "simple_string", "minilm"]


def models_here():
    """The example models whose files are present (minilm's weights come from `make setup`)."""
    present = ["simple", "simple_string", "mlp", "mlp_autoconf", "mlp_candle"]
    for m in ("minilm", "minilm_onnx"):
        if any((ROOT / "models" / m / "1").glob("*.safetensors")) or (ROOT / "models" / m / "1/model.onnx").exists():
            present.append(m)
    return present


def good_request(model, rng):
    """(inputs as (name, array) pairs, output names) of a valid request to `model`."""
    if model == "simple":
        return [("INPUT0", rng.integers(-1000, 1000, (1, 16), dtype=np.int32)),
                ("INPUT1", rng.integers(-1000, 1000, (1, 16), dtype=np.int32))], ["OUTPUT0", "OUTPUT1"]
    if model == "simple_string":
        a, b = rng.integers(0, 100, 16), rng.integers(0, 100, 16)
        return [("INPUT0", np.array([str(x).encode() for x in a], dtype=np.object_).reshape(1, 16)),
                ("INPUT1", np.array([str(x).encode() for x in b], dtype=np.object_).reshape(1, 16))], \
            ["OUTPUT0", "OUTPUT1"]
    if model.startswith("mlp"):
        # A few fixed inputs, so answers can be compared with the model's first answer to each.
        seed = int(rng.integers(0, 4))
        x = np.random.default_rng(seed).standard_normal((1 + seed, 64)).astype(np.float32)
        return [("INPUT", x)], ["OUTPUT"]
    if model == "minilm_onnx":
        # Token ids of "[CLS] hello world [SEP]" and of a longer one: the graph takes tokenized input.
        ids = [[101, 7592, 2088, 102], [101, 1037, 14768, 3231, 3216, 2005, 1037, 2146, 2051, 1012, 102]]
        row = np.array([ids[int(rng.integers(0, 2))]], dtype=np.int64)
        return [("input_ids", row), ("attention_mask", np.ones_like(row))], ["sentence_embedding"]
    text = SENTENCES[int(rng.integers(0, len(SENTENCES)))]
    return [("TEXT", np.array([text.encode()], dtype=np.object_).reshape(1, 1))], ["EMBEDDING"]


def bad_request(models, rng):
    """(model, inputs) that the server must refuse with a client error."""
    kind = int(rng.integers(0, 3))
    if kind == 0:
        return "no_such_model", [("INPUT0", np.zeros((1, 16), np.int32))]
    if kind == 1:
        return "simple", [("INPUT0", np.zeros((1, 15), np.int32)), ("INPUT1", np.zeros((1, 15), np.int32))]
    return "mlp", [("INPUT", np.zeros((1, 64), np.int64))]


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.good = self.bad_refused = 0
        self.failures = []  # (when, what)
        self.reference = {}  # (model, key) -> outputs
        self.latencies = []

    def fail(self, what):
        with self.lock:
            self.failures.append((time.strftime("%H:%M:%S"), what))
            print(f"FAILURE: {what}", file=sys.stderr, flush=True)


def key_of(inputs):
    return tuple((n, a.shape, a.tobytes() if a.dtype != np.object_ else b"|".join(a.ravel())) for n, a in inputs)


def check_answer(tally, model, inputs, outputs):
    if model == "simple":
        a, b = inputs[0][1], inputs[1][1]
        if not (np.array_equal(outputs["OUTPUT0"], a + b) and np.array_equal(outputs["OUTPUT1"], a - b)):
            tally.fail(f"simple gave wrong sums/differences")
        return
    if model == "simple_string":
        a = np.array([int(x) for x in inputs[0][1].ravel()])
        b = np.array([int(x) for x in inputs[1][1].ravel()])
        got = np.array([int(x) for x in outputs["OUTPUT0"].ravel()])
        if not np.array_equal(got, a + b):
            tally.fail("simple_string gave wrong sums")
        return
    k = (model, key_of(inputs))
    with tally.lock:
        ref = tally.reference.setdefault(k, outputs)
    for name, want in ref.items():
        if not np.allclose(outputs[name], want, atol=1e-4):
            tally.fail(f"{model} answer changed (max diff {np.abs(outputs[name] - want).max():.3g})")


def triton_inputs(mod, pairs):
    inputs = []
    for name, arr in pairs:
        i = mod.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
        i.set_data_from_numpy(arr)
        inputs.append(i)
    return inputs


def client_loop(protocol, url, models, tally, stop, seed, bad_every):
    mod = httpclient if protocol == "http" else grpcclient
    client = mod.InferenceServerClient(url=url)
    rng = np.random.default_rng(seed)
    n = 0
    while not stop.is_set():
        n += 1
        if n % bad_every == 0:
            model, pairs = bad_request(models, rng)
            infer_inputs = triton_inputs(mod, pairs)
            try:
                client.infer(model, infer_inputs)
                tally.fail(f"bad request to {model} accepted ({protocol})")
            except InferenceServerException as e:
                status = str(e.status() or "")
                # HTTP 4xx, or the gRPC codes for client errors.
                if status.startswith("4") or any(c in status for c in ("INVALID_ARGUMENT", "NOT_FOUND")) \
                        or "unknown model" in str(e) or "400" in str(e):
                    with tally.lock:
                        tally.bad_refused += 1
                else:
                    tally.fail(f"bad request to {model} got {status}: {e} ({protocol})")
            continue
        model = models[n % len(models)]
        pairs, outputs = good_request(model, rng)
        infer_inputs = triton_inputs(mod, pairs)
        t0 = time.perf_counter()
        try:
            result = client.infer(model, infer_inputs)
            got = {o: result.as_numpy(o) for o in outputs}
        except InferenceServerException as e:
            tally.fail(f"good request to {model} failed ({protocol}): {e}")
            continue
        with tally.lock:
            tally.good += 1
            if len(tally.latencies) < 2_000_000:
                tally.latencies.append(time.perf_counter() - t0)
        check_answer(tally, model, pairs, got)
    client.close()


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def reload(port, model, token):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/repository/models/{model}/load", data=b"{}",
                                 method="POST", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return r.status


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--port", type=int, default=18300)
    ap.add_argument("--clients-per-protocol", type=int, default=2)
    ap.add_argument("--bad-every", type=int, default=20, help="one bad request in this many")
    ap.add_argument("--warmup-minutes", type=float, default=2)
    ap.add_argument("--rss-slack", type=float, default=0.10, help="allowed RSS growth after warm-up")
    ap.add_argument("--record", action="store_true", help="write the Soak section of benches/RESULTS.md")
    args = ap.parse_args()

    models = models_here()
    token = "soak-admin"
    out = Path(tempfile.mkdtemp(prefix="inferd-soak-"))
    proc, shown = start(out, "soak", args.port, ["--model-control-mode", "explicit", "--load-model", ",".join(models),
                                                 "--admin-token", token])
    tally, stop = Tally(), threading.Event()
    threads = []
    for p in ("http", "grpc"):
        url = f"127.0.0.1:{args.port + (1 if p == 'grpc' else 0)}"
        for c in range(args.clients_per_protocol):
            t = threading.Thread(target=client_loop, daemon=True,
                                 args=(p, url, models, tally, stop, hash((p, c)) & 0xFFFF, args.bad_every))
            t.start()
            threads.append(t)

    started = time.monotonic()
    end = started + args.minutes * 60
    samples, reloads, reload_failures = [], [], []
    next_reload, next_sample = started + 60, started
    reloadable = [m for m in RELOADED if m in models]
    while time.monotonic() < end and proc.poll() is None:
        now = time.monotonic()
        if now >= next_sample:
            samples.append(((now - started) / 60, rss_kib(proc.pid)))
            with tally.lock:
                good, bad, failed = tally.good, tally.bad_refused, len(tally.failures)
            print(f"{(now - started) / 60:5.1f} min  rss {samples[-1][1] / 1024:7.1f} MiB  good {good}  "
                  f"bad refused {bad}  failures {failed}  reloads {len(reloads)}", flush=True)
            next_sample += 10
        if now >= next_reload:
            model = reloadable[len(reloads) % len(reloadable)]
            t0 = time.monotonic()
            try:
                reload(args.port, model, token)
                reloads.append((model, time.monotonic() - t0))
            except Exception as e:  # noqa: BLE001 — any failure to reload is a finding
                reload_failures.append(f"{model}: {e}")
                tally.fail(f"reload of {model} failed: {e}")
            next_reload += 60
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    crashed = proc.poll() is not None
    samples.append(((time.monotonic() - started) / 60, rss_kib(proc.pid) if not crashed else 0))
    proc.terminate()
    proc.wait(timeout=60)

    after_warmup = [r for m, r in samples if m >= args.warmup_minutes] or [r for _, r in samples]
    base, last, peak = after_warmup[0], samples[-1][1], max(r for _, r in samples)
    growth = (last - base) / base if base else 0
    lat = np.array(tally.latencies) * 1000
    passed = not crashed and not tally.failures and growth <= args.rss_slack
    minutes = samples[-1][0]
    marks = {}
    for m, r in samples:  # the first sample at or after each fifth minute, and the last one
        marks.setdefault(int(m // 5) * 5, (m, r))
    marks[round(samples[-1][0], 1)] = samples[-1]
    table = "\n".join(f"| {m:.1f} | {r / 1024:.1f} |" for m, r in marks.values())
    block = f"""Command: `scripts/soak.py --minutes {args.minutes:g} --record` (release build, {len(threads)} tritonclient clients,
half HTTP and half gRPC, one bad request in {args.bad_every}; a model reloaded through the repository API every
minute). Server: `{shown}`. Models: {', '.join(models)}.

- Ran {minutes:.1f} min: {tally.good} good requests, **{len(tally.failures)} failed or wrong**; {tally.bad_refused}
  bad requests, all refused with a client error; {len(reloads)} reloads ({', '.join(sorted(set(m for m, _ in reloads)))}),
  {len(reload_failures)} failed, each took {min((d for _, d in reloads), default=0) * 1000:.0f}–{max((d for _, d in reloads), default=0) * 1000:.0f} ms.
- Latency of good requests: p50 {np.percentile(lat, 50) if len(lat) else 0:.2f} ms, p99 {np.percentile(lat, 99) if len(lat) else 0:.2f} ms
  (a mix of sub-millisecond MLPs and MiniLM embeddings, with the clients' CPU on the same 2 cores).
- Resident memory: {base / 1024:.1f} MiB after {args.warmup_minutes:g} min of warm-up, {last / 1024:.1f} MiB at the end
  ({growth * 100:+.1f}%), peak {peak / 1024:.1f} MiB. {'PASSED' if passed else 'FAILED'}.

| minute | RSS (MiB) |
|---|---|
{table}
"""
    if tally.failures:
        block += "\nFailures (first 10):\n" + "\n".join(f"- {w} {what}" for w, what in tally.failures[:10]) + "\n"
    print(block)
    if args.record:
        replace_section("soak", "Soak", block.rstrip())
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
