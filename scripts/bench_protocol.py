#!/usr/bin/env python3
"""What Triton's deeper protocol buys and costs, measured with perf_analyzer against one release inferd:

- shared memory: a large tensor (FP32 1x3x224x224, 588 KiB, in and out) through the built-in identity backend
  (so the model costs nothing and only serving shows), sent as plain binary tensors (HTTP binary extension,
  gRPC raw contents) against `--shared-memory system` (inputs and outputs in system shared memory regions);
  throughput and server CPU per request, per protocol, in alternating rounds;
- sequences: perf_analyzer's sequence mode on `simple_sequence` (correlation ids, START/END, the sequence
  batcher), over HTTP, gRPC and the gRPC stream.

Writes the tables into benches/RESULTS.md between <!-- bench:protocol:start --> and <!-- bench:protocol:end -->.

    scripts/bench_protocol.py [--rounds 3] [--requests 1500] [--concurrency 4] [--no-record]

Run `make build` (release) first; `make bench-protocol` does both.
"""
import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from perf_common import HZ, ROOT, cpu_ticks, perf_analyzer, replace_section, start, successes

OUT = ROOT / "target" / "bench-protocol"
PORT = 19400
TENSOR_BYTES = 3 * 224 * 224 * 4

IDENTITY_CONFIG = """name: "identity_fp32"
backend: "identity"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 3, 224, 224 ] } ]
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


def repository(tmp):
    repo = Path(tmp) / "models"
    (repo / "identity_fp32" / "1").mkdir(parents=True)
    (repo / "identity_fp32" / "config.pbtxt").write_text(IDENTITY_CONFIG)
    shutil.copytree(ROOT / "models" / "simple_sequence", repo / "simple_sequence")
    return repo


def measure(pa, proc, model, protocol, concurrency, requests, tag, extra):
    """One perf_analyzer run in count-windows mode: (infer/s, server CPU µs per request, p50 µs, command as
    shown). With 588 KiB tensors over HTTP, perf_analyzer 2.50 writes its results and then now and then never
    exits (so --request-count runs, timed from their export, cannot be used here): the CSV it wrote counts, and a
    run that hangs is killed after 90 s. Server CPU is over every request the server counted in the run."""
    url = f"127.0.0.1:{PORT + 1 if protocol == 'grpc' else PORT}"
    out_csv = OUT / f"{tag}.csv"
    cmd = [pa, "-m", model, "-i", protocol, "-u", url, "-b", "1", "--concurrency-range", str(concurrency),
           "--measurement-mode", "count_windows", "--measurement-request-count", str(requests),
           "--stability-percentage", "50", *extra, "-f", str(out_csv)]
    out_csv.unlink(missing_ok=True)
    n0, c0 = successes(PORT, model), cpu_ticks(proc.pid)
    try:
        subprocess.run(cmd, stdout=open(OUT / f"{tag}.log", "w"), stderr=subprocess.STDOUT, timeout=90)
    except subprocess.TimeoutExpired:
        pass
    c1, n1 = cpu_ticks(proc.pid), successes(PORT, model)
    if not out_csv.exists():
        sys.exit(f"{tag}: perf_analyzer wrote no results; see {OUT / (tag + '.log')}")
    with open(out_csv, newline="") as f:
        row = next(csv.DictReader(f))
    shown = " ".join(["perf_analyzer", *cmd[1:]]).replace(str(OUT) + "/", "")
    return (float(row["Inferences/Second"]), (c1 - c0) / HZ / max(n1 - n0, 1) * 1e6,
            float(row.get("p50 latency") or 0), shown)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=1500)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--sequence-requests", type=int, default=3000)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    pa = perf_analyzer()
    with tempfile.TemporaryDirectory() as tmp:
        proc, shown_server = start(OUT, "inferd", PORT, repository=repository(tmp))
        try:
            shm = ["--shared-memory", "system", "--output-shared-memory-size", str(TENSOR_BYTES)]
            results = {}
            commands = {}
            for r in range(args.rounds):
                for protocol in ("http", "grpc"):
                    for mode, extra in (("binary", []), ("system shm", shm)):
                        rate, cpu, p50, shown = measure(pa, proc, "identity_fp32", protocol, args.concurrency,
                                                        args.requests,
                                                        f"shm-{protocol}-{mode.replace(' ', '')}-{r}", extra)
                        results.setdefault((protocol, mode), []).append((rate, cpu, p50))
                        commands[(protocol, mode)] = shown
                        print(f"round {r} {protocol} {mode}: {rate:.0f} infer/s, {cpu:.0f} µs CPU/request, "
                              f"p50 {p50:.0f} µs", flush=True)
            seq = {}
            for name, protocol, extra in (("HTTP", "http", []), ("gRPC", "grpc", []),
                                          ("gRPC stream", "grpc", ["--streaming"])):
                seq_args = ["--sequence-length", "20", "--sequence-id-range", "1:100000", *extra]
                rate, cpu, p50, shown = measure(pa, proc, "simple_sequence", protocol, 8, args.sequence_requests,
                                                f"seq-{name.replace(' ', '')}", seq_args)
                seq[name] = (rate, cpu, p50, shown)
                print(f"sequence {name}: {rate:.0f} infer/s, {cpu:.0f} µs CPU/request, p50 {p50:.0f} µs",
                      flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    lines = [
        f"Server: `{shown_server}` (a repository of `identity_fp32`, backend identity, FP32 [3,224,224], and "
        f"`models/simple_sequence`). {args.rounds} rounds, HTTP and gRPC alternating; medians; 2 cores shared "
        "by client and server.",
        "",
        "| protocol | tensors | infer/s (median) | server CPU µs/request (median) | p50 µs | runs (infer/s) |",
        "|---|---|---|---|---|---|",
    ]
    for (protocol, mode), rows in results.items():
        runs = ", ".join(f"{r:.0f}" for r, _, _ in rows)
        lines.append(f"| {protocol} | {mode} | {statistics.median(r for r, _, _ in rows):.0f} | "
                     f"{statistics.median(c for _, c, _ in rows):.0f} | "
                     f"{statistics.median(p for _, _, p in rows):.0f} | {runs} |")
    lines += ["", "Commands (per round, tags differ only in file names):", ""]
    lines += [f"- {protocol} {mode}: `{cmd}`" for (protocol, mode), cmd in commands.items()]
    lines += ["", "Sequence mode on `simple_sequence` (concurrency 8, sequences of 20 requests):", "",
              "| protocol | infer/s | server CPU µs/request | p50 µs |", "|---|---|---|---|"]
    lines += [f"| {name} | {rate:.0f} | {cpu:.0f} | {p50:.0f} |" for name, (rate, cpu, p50, _) in seq.items()]
    lines += ["", *[f"- {name}: `{shown}`" for name, (_, _, _, shown) in seq.items()]]
    block = "\n".join(lines)
    print(block)
    if not args.no_record:
        replace_section("protocol", "Shared memory and sequences (issue 16)", block)


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
