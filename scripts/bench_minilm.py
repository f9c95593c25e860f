#!/usr/bin/env python3
"""MiniLM embeddings per second on CPU: perf_analyzer against `minilm` (the candle backend) at concurrency 1, 8
and 32 over HTTP and gRPC, sending the sentences of benches/minilm_input.json one per request (the server
batches them), with the server's CPU per request; beside it, raw candle in-process on batches of the same
sentences (`cargo bench --bench candle_raw`). Writes benches/RESULTS.md between <!-- bench:minilm:start -->
and <!-- bench:minilm:end -->.

    scripts/bench_minilm.py [--seconds 6] [--skip-raw]

Needs `make setup` (MiniLM in models/minilm/1) and a release build (`make build`).
"""
import argparse
import json
import subprocess
import sys
import time

from perf_common import raw_onnxruntime, ROOT, measure, perf_analyzer, replace_section, start

OUT = ROOT / "target" / "bench-minilm"
INPUT = ROOT / "benches" / "minilm_input.json"


def raw_candle():
    """Criterion's mean time per batch, in ms, for each (kind, batch) of the candle_raw bench."""
    subprocess.run(["cargo", "bench", "--bench", "candle_raw"], cwd=ROOT, check=True,
                   stdout=open(OUT / "candle_raw.log", "w"), stderr=subprocess.STDOUT)
    times = {}
    for kind in ("candle_raw", "inferd_instance"):
        for batch in (1, 8, 32):
            est = ROOT / "target/criterion/minilm" / kind / str(batch) / "new/estimates.json"
            times[(kind, batch)] = json.loads(est.read_text())["mean"]["point_estimate"] / 1e6
    return times





def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each perf_analyzer run")
    ap.add_argument("--port-base", type=int, default=18400)
    ap.add_argument("--skip-raw", action="store_true")
    a = ap.parse_args()
    if not (ROOT / "models/minilm/1/model.safetensors").is_file():
        sys.exit("models/minilm/1 is missing: run `make setup`")
    OUT.mkdir(parents=True, exist_ok=True)
    raw = {} if a.skip_raw else raw_candle()
    ort_ms = {} if a.skip_raw else raw_onnxruntime()
    pa = perf_analyzer()
    proc, server_cmd = start(OUT, "inferd", a.port_base)
    rows, shown = [], ""
    try:
        for protocol in ("http", "grpc"):
            measure(pa, OUT, proc, a.port_base, "minilm", protocol, 8, 100, f"warmup-{protocol}",
                    ["--input-data", str(INPUT)])
            for c in (1, 8, 32):
                # Size each run from a short probe so that it lasts about --seconds.
                probe, *_ = measure(pa, OUT, proc, a.port_base, "minilm", protocol, c, 4 * c + 20,
                                    f"probe-{protocol}-c{c}", ["--input-data", str(INPUT)])
                n = max(50, int(probe * a.seconds))
                rate, cpu, p50, shown = measure(pa, OUT, proc, a.port_base, "minilm", protocol, c, n,
                                                f"{protocol}-c{c}", ["--input-data", str(INPUT)])
                rows.append((protocol, c, rate, p50, cpu, n))
                print(f"{protocol} c={c}: {rate:.1f} embeddings/s, p50 {p50 / 1000:.1f} ms, "
                      f"{cpu / 1000:.2f} ms CPU/request", file=sys.stderr)
    finally:
        proc.terminate()

    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `scripts/bench_minilm.py --seconds "
        f"{a.seconds:g}` (2 shared cores; candle on CPU with RAYON_NUM_THREADS=1, one instance, dynamic batching "
        "up to 32; each request one sentence of benches/minilm_input.json).",
        "",
        f"- server: `{server_cmd}`",
        f"- each run: `{shown}` (N sized to about {a.seconds:g} s)",
        "",
        "| protocol | concurrency | embeddings/s | p50 ms | server CPU ms/request | requests |",
        "|---|---|---|---|---|---|",
    ]
    for protocol, c, rate, p50, cpu, n in rows:
        lines.append(f"| {protocol} | {c} | {rate:.1f} | {p50 / 1000:.1f} | {cpu / 1000:.2f} | {n} |")
    if raw:
        lines += [
            "",
            "Raw, in-process, the same sentences, one thread: candle + tokenizers straight, and inferd's candle "
            "instance (`cargo bench --bench candle_raw`, criterion mean per batch); and the same pipeline as one "
            "ONNX graph (`models/minilm_onnx`) in ONNX Runtime, tokenised by the Python tokenizers package:",
            "",
            "| batch | candle raw ms | emb/s | inferd candle instance ms | emb/s | ONNX Runtime ms | emb/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for b in (1, 8, 32):
            r, i, o = raw[("candle_raw", b)], raw[("inferd_instance", b)], ort_ms[b]
            lines.append(f"| {b} | {r:.2f} | {b / r * 1000:.1f} | {i:.2f} | {b / i * 1000:.1f} | {o:.2f} | "
                         f"{b / o * 1000:.1f} |")
    block = "\n".join(lines)
    print(block)
    replace_section("minilm", "MiniLM on the candle backend (issue 6)", block)


if __name__ == "__main__":
    main()
