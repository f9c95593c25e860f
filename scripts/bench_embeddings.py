#!/usr/bin/env python3
"""Text embeddings per second through the OpenAI and TEI routes (issue 18), beside the V2 endpoint of the same model
and raw ONNX Runtime: `all-MiniLM-L6-v2` (ONNX Runtime, text in, tokenized in the server) at concurrency 1, 8 and
32, one sentence of benches/minilm_input.json per request, with p50 latency and the server's CPU per request;
then the same graph (models/minilm_onnx/1/model.onnx) in-process at batch 1, 8 and 32 with one and with two
intra-op threads, tokenized by the tokenizers package. Writes benches/RESULTS.md between
<!-- bench:embeddings:start --> and <!-- bench:embeddings:end -->.

    scripts/bench_embeddings.py [--seconds 8] [--rounds 3] [--binary target/release/inferd] [--skip-raw]

The load generator is this script: per run, N threads, each with its own keep-alive HTTP/1.1 connection
(http.client), each sending its next request as soon as its last answer arrived (a closed loop) for --seconds after
a warm-up, --rounds times with the routes' order rotating (medians are reported); request bodies are encoded once beforehand and answers are read, not decoded (one answer per route is
decoded and checked first). Its own CPU per request is reported too, to show it is not what limits the rate.

Needs `make setup` (MiniLM in models/) and a release build (`make build`).
"""
import argparse
import http.client
import json
import os
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

from perf_common import HZ, ROOT, busy_processes, cpu_ticks, raw_onnxruntime, replace_section, start

OUT = ROOT / "target" / "bench-embeddings"
INPUT = ROOT / "benches" / "minilm_input.json"
MODEL = "all-MiniLM-L6-v2"
DIM = 384
CONCURRENCY = (1, 8, 32)
HEADERS = {"Content-Type": "application/json"}

# What the whole team measured for Hugging Face text-embeddings-inference v1.9.3 (candle on CPU, no MKL) on this
# kind of machine (2 cores, client on the same cores) with wrk, all-MiniLM-L6-v2, ~14-token sentences, HTTP.
TEI = {
    1: ("36–45", "21–28", "–"),
    32: ("43–50", "–", "≈22–26"),  # ~1.1 of the 2 cores busy at 43–50 embeddings/s
}

# One route: URL path, request body for one text, and a check of one decoded answer.
ROUTES = {
    "OpenAI `/v1/embeddings`": (
        "/v1/embeddings",
        lambda text: {"input": text, "model": MODEL},
        lambda body: body["object"] == "list" and len(body["data"][0]["embedding"]) == DIM,
    ),
    "TEI `/embed`": (
        "/embed",
        lambda text: {"inputs": text},
        lambda body: len(body) == 1 and len(body[0]) == DIM,
    ),
    f"V2 `/v2/models/{MODEL}/infer` (JSON)": (
        f"/v2/models/{MODEL}/infer",
        lambda text: {"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": [text]}]},
        lambda body: len(body["outputs"][0]["data"]) == DIM,
    ),
}




def check_route(port, path, body, check):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, json.dumps(body).encode(), HEADERS)
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        sys.exit(f"POST {path}: {resp.status} {data[:500]!r}")
    if not check(json.loads(data)):
        sys.exit(f"POST {path}: unexpected answer {data[:500]!r}")


def closed_loop(port, path, bodies, concurrency, seconds):
    """`concurrency` threads, each on its own keep-alive connection, each sending the next body as soon as its
    last answer arrived, until `seconds` have passed. Returns (answers within `seconds` per second, every
    latency in s, answers in all, client CPU s)."""
    connected, go = threading.Barrier(concurrency + 1), threading.Event()
    deadline = [0.0]
    latencies = [[] for _ in range(concurrency)]
    failures = []

    def worker(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mine, i = latencies[k], k
        try:
            connected.wait()
            go.wait()
            while (t0 := time.perf_counter()) < deadline[0]:
                conn.request("POST", path, bodies[i % len(bodies)], HEADERS)
                resp = conn.getresponse()
                data = resp.read()
                t1 = time.perf_counter()
                if resp.status != 200:
                    failures.append(f"{resp.status} {data[:300]!r}")
                    return
                mine.append((t1, t1 - t0))
                i += concurrency
        except Exception as e:  # noqa: BLE001 - reported below, with the others
            failures.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    connected.wait()
    cpu0 = time.process_time()
    deadline[0] = time.perf_counter() + seconds
    go.set()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu0
    if failures:
        sys.exit(f"POST {path} at concurrency {concurrency}: {len(failures)} failed, first: {failures[0]}")
    done = [x for per in latencies for x in per]
    in_time = sum(1 for end, _ in done if end <= deadline[0])
    return in_time / seconds, [lat for _, lat in done], len(done), cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="length of each measured run")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured run before each measured one")
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs of each route and concurrency, the routes' order rotating; medians are reported")
    ap.add_argument("--port-base", type=int, default=18600)
    ap.add_argument("--binary", type=Path, default=ROOT / "target/release/inferd")
    ap.add_argument("--skip-raw", action="store_true", help="leave out raw ONNX Runtime")
    ap.add_argument("--no-record", action="store_true", help="print the table without writing benches/RESULTS.md")
    a = ap.parse_args()
    binary = a.binary if a.binary.is_absolute() else (Path.cwd() / a.binary).resolve()
    if not (ROOT / "models" / MODEL / "1" / "model.onnx").is_file():
        sys.exit(f"models/{MODEL}/1 is missing: run `make setup`")
    if not binary.is_file():
        sys.exit(f"{binary} missing: run `make build`")
    OUT.mkdir(parents=True, exist_ok=True)
    texts = [d["TEXT"]["content"][0] for d in json.loads(INPUT.read_text())["data"]]
    load_before, busy_before = os.getloadavg(), busy_processes()

    # Raw first, with no server up, so that it has both cores.
    raw = {} if a.skip_raw else {t: raw_onnxruntime(t, max(3.0, a.seconds / 2)) for t in (1, 2)}

    proc, server_cmd = start(OUT, "inferd", a.port_base, ("--tei-model", MODEL), binary=binary)
    runs = {}  # (route, concurrency) -> [(embeddings/s, p50 ms, server CPU ms/request, client CPU ms/request, n)]
    names = list(ROUTES)
    try:
        for name, (path, body, check) in ROUTES.items():
            check_route(a.port_base, path, body(texts[0]), check)
        for c in CONCURRENCY:
            for r in range(a.rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    path, body, _ = ROUTES[name]
                    bodies = [json.dumps(body(t)).encode() for t in texts]
                    closed_loop(a.port_base, path, bodies, c, a.warmup)
                    c0 = cpu_ticks(proc.pid)
                    rate, lat, n, client_cpu = closed_loop(a.port_base, path, bodies, c, a.seconds)
                    server_cpu = (cpu_ticks(proc.pid) - c0) / HZ
                    p50 = statistics.median(lat) * 1000
                    runs.setdefault((name, c), []).append(
                        (rate, p50, server_cpu / n * 1000, client_cpu / n * 1000, n))
                    print(f"{name} c={c} round {r + 1}: {rate:.1f} embeddings/s, p50 {p50:.1f} ms, server "
                          f"{server_cpu / n * 1000:.2f} ms CPU/request, client {client_cpu / n * 1000:.2f}",
                          file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    load_after, busy_after = os.getloadavg(), busy_processes()

    command = "scripts/bench_embeddings.py --seconds {:g} --rounds {}".format(a.seconds, a.rounds)
    if a.warmup != 2.0:
        command += f" --warmup {a.warmup:g}"
    if binary != ROOT / "target/release/inferd":
        command += f" --binary {binary}"
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `{command}` (2 cores shared by the "
        f"server and the load generator; 1-minute load {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
        f"other processes over 5% of a core before: {busy_before}, after: {busy_after}). `{MODEL}`: the MiniLM "
        "graph on ONNX Runtime, two intra-op threads (its config's intra_op_thread_count), one instance, dynamic batching up to 32, the server "
        "tokenizing; each request one sentence of benches/minilm_input.json (~14 tokens), answered as JSON floats.",
        "",
        f"- server: `{server_cmd}`",
        f"- each run: this script's closed loop, N threads each with its own keep-alive HTTP/1.1 connection, "
        f"{a.warmup:g} s warm-up then {a.seconds:g} s measured (embeddings/s counts the answers that arrived "
        "within those seconds); server CPU from /proc/PID/stat over the run, divided by every answer of it; "
        f"{a.rounds} rounds per row, the routes' order rotating from round to round; medians",
        "",
        "| route | concurrency | embeddings/s | p50 ms | server CPU ms/request | client CPU ms/request | "
        "runs (embeddings/s) |",
        "|---|---|---|---|---|---|---|",
    ]
    med = {}
    for c in CONCURRENCY:
        for name in names:
            rows = runs[(name, c)]
            med[(name, c)] = [statistics.median(row[i] for row in rows) for i in range(4)]
            rate, p50, server_cpu, client_cpu = med[(name, c)]
            each = ", ".join(f"{row[0]:.0f}" for row in rows)
            lines.append(f"| {name} | {c} | {rate:.1f} | {p50:.1f} | {server_cpu:.2f} | {client_cpu:.2f} | {each} |")
    for c, (rate, p50, cpu) in TEI.items():
        lines.append(f"| TEI v1.9.3 `/embed` (wrk; earlier measurement on this kind of machine) | {c} | {rate} | "
                     f"{p50} | {cpu} | – | – |")

    openai_name, tei_name, v2_name = names
    lines += ["", "Read across (medians; single runs on these shared cores vary by ±15–30%):", ""]
    for c in CONCURRENCY:
        o, t, v = med[(openai_name, c)], med[(tei_name, c)], med[(v2_name, c)]
        lines.append(f"- c={c}: OpenAI route {o[0] / v[0] * 100:.0f}% and TEI route {t[0] / v[0] * 100:.0f}% of V2's "
                     f"rate; server CPU per request {o[2] - v[2]:+.2f} / {t[2] - v[2]:+.2f} ms against V2's.")
    o1, o32 = med[(openai_name, 1)], med[(openai_name, 32)]
    lines.append(f"- Against TEI v1.9.3's figures: OpenAI route at c=1 {o1[0]:.0f}/s, p50 {o1[1]:.1f} ms (TEI 36–45/s, "
                 f"p50 21–28 ms); at c=32 {o32[0]:.0f}/s (TEI 43–50/s): {o32[0] / 50:.1f}–{o32[0] / 43:.1f}×.")

    if raw:
        lines += [
            "",
            "Raw, in-process, the same graph (`models/minilm_onnx/1/model.onnx`) in ONNX Runtime on batches of the "
            "same sentences (each batch the next sentences in turn), tokenized by the Python tokenizers package (padding to the longest), no server "
            "running:",
            "",
            "| batch | 1 thread ms/batch | embeddings/s | 2 intra-op threads ms/batch | embeddings/s |",
            "|---|---|---|---|---|",
        ]
        for b in CONCURRENCY:
            one, two = raw[1][b], raw[2][b]
            lines.append(f"| {b} | {one:.2f} | {b / one * 1000:.1f} | {two:.2f} | {b / two * 1000:.1f} |")
    block = "\n".join(lines)
    print(block)
    if not a.no_record:
        replace_section("embeddings", "Text embeddings: OpenAI and TEI routes (issue 18)", block)


if __name__ == "__main__":
    main()
