#!/usr/bin/env python3
"""Issue 17's overhead report: what inferd spends serving a request, before and after a change, beside the
Triton peer, in one run on one machine.

    scripts/bench_overhead.py --before BIN_A --after BIN_B [--rounds 3] [--no-triton] [--record]

Servers run one at a time: inferd BEFORE, inferd AFTER (their order alternates from round to round) and the
Triton peer (scripts/peer_triton.sh: Triton 2.51 via PyTriton, mlp from models/mlp/1/model.onnx through
onnxruntime, identity and identity_image as numpy identities). Against each, after a short warm-up, perf_analyzer
--request-count runs (never its windowed modes, which stall at inferd's rates), watched from outside
(perf_common.measure_watched: server CPU of the server's whole session over the successes its statistics
endpoint counted; a run that hangs after the last answer is killed and, where its p50 is needed, repeated):
  - mlp and identity (FP32 [64]), HTTP and gRPC, concurrency 1 and 32: infer/s (first send to last response,
    from --profile-export-file), server CPU µs per request, and p50 at c=1 (perf_analyzer's CSV);
  - identity_image (FP32 [3,224,224], 602,112 bytes each way), HTTP and gRPC, concurrency 1 and 4: infer/s (the
    server's count over the polled span: the export would hold every tensor), GB/s in+out, CPU per request;
  - a plain memcpy on the same machine for scale.
Medians over the rounds. Prints the report; --record also writes it into benches/RESULTS.md between
<!-- bench:overhead:start --> and <!-- bench:overhead:end -->. Raw output goes to target/bench-overhead/.
At --rounds 3 with Triton it takes about 10-15 minutes on 2 cores (the peer's first install adds a few).
"""
import argparse
import ctypes
import datetime
import hashlib
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from perf_common import (ROOT, PerfAnalyzerFailed, measure_watched, perf_analyzer, replace_section,
                         session_cpu_ticks, start, start_peer, stop_session)

OUT = ROOT / "target" / "bench-overhead"
IMAGE_BYTES = 3 * 224 * 224 * 4
MODELS = ("mlp", "identity", "identity_image")
PEER_SPECS = ("mlp=models/mlp/1/model.onnx", "identity=identity:FP32:64", "identity_image=identity:FP32:3,224,224")
SMALL = [(m, p, c) for m in ("mlp", "identity") for p in ("http", "grpc") for c in (1, 32)]
LARGE = [("identity_image", p, c) for p in ("http", "grpc") for c in (1, 4)]
# Requests per run, sized for 1-4 s of load on 2 cores: the Triton peer serves 5-10× fewer per second.
REQUESTS = {"inferd": {1: 3000, 32: 30000, "image1": 800, "image4": 1200},
            "triton": {1: 600, 32: 5000, "image1": 300, "image4": 400}}
WARMUP = {"inferd": (4, 500, 100), "triton": (4, 100, 40)}  # concurrency, requests (small, image)


def requests_for(kind, model, concurrency, scale):
    key = f"image{concurrency}" if model == "identity_image" else concurrency
    return max(50, int(REQUESTS[kind][key] * scale))


def binary_line(label, path):
    """What identifies a binary in the report: its path, size, modification time and a hash prefix."""
    data = path.read_bytes()
    mtime = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    shown = os.path.relpath(path, ROOT) if path.is_relative_to(ROOT) else str(path)
    return (f"{label}: `{shown}`, {len(data) / 1e6:.1f} MB, modified {mtime:%Y-%m-%d %H:%M} UTC, "
            f"sha256 {hashlib.sha256(data).hexdigest()[:12]}")


def memcpy_gbs(seconds=0.5, repeats=5):
    """Bytes copied per second by libc's memcpy (ctypes.memmove) of one 602,112-byte buffer into another, one
    thread, buffers warm in cache; the median of `repeats` timings of `seconds` each."""
    src, dst = bytearray(os.urandom(IMAGE_BYTES)), bytearray(IMAGE_BYTES)
    a = (ctypes.c_char * IMAGE_BYTES).from_buffer(src)
    b = (ctypes.c_char * IMAGE_BYTES).from_buffer(dst)
    rates = []
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(50):
                ctypes.memmove(b, a, IMAGE_BYTES)
            n += 50
        rates.append(n * IMAGE_BYTES / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def port_free(port):
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


class Bench:
    def __init__(self, args, pa):
        self.a, self.pa = args, pa
        self.results = {}  # (system, model, protocol, concurrency) -> [Run]
        self.failures, self.notes, self.commands = [], [], {}

    def measure_server(self, system, kind, port, cpu, rnd):
        """Warm-up, then every workload once against the server on `port`."""
        c_w, n_small, n_image = WARMUP[kind]
        for model in MODELS:
            for protocol in ("http", "grpc"):
                n = n_image if model == "identity_image" else n_small
                try:
                    measure_watched(self.pa, OUT, f"{system}-warmup-{model}-{protocol}", port, model, protocol,
                                    c_w, n, cpu, export=False)
                except PerfAnalyzerFailed as e:
                    self.failures.append(f"round {rnd} {system} warm-up: {e}")
        for model, protocol, c in SMALL + LARGE:
            n = requests_for(kind, model, c, self.a.scale)
            tag = f"{system}-{model}-{protocol}-c{c}-r{rnd}"
            print(f"bench_overhead: round {rnd} {system} {model} {protocol} c={c} ({n} requests)", file=sys.stderr)
            try:
                run = measure_watched(self.pa, OUT, tag, port, model, protocol, c, n, cpu,
                                      export=model != "identity_image", need_p50=c == 1)
            except PerfAnalyzerFailed as e:
                self.failures.append(f"round {rnd}: {e}")
                continue
            print(f"bench_overhead:   {run.rate:.0f} infer/s, {run.cpu_us:.0f} µs CPU/request"
                  + (f", p50 {run.p50_us:.0f} µs" if run.p50_us is not None else "")
                  + ("" if run.tries == 1 else f" (try {run.tries})"), file=sys.stderr)
            self.results.setdefault((system, model, protocol, c), []).append(run)
            self.commands.setdefault((kind, model, protocol, c), run.shown.replace(f"-r{rnd}.", "-rN."))
            if run.tries > 1 or (run.rate_from != "export" and model != "identity_image"):
                self.notes.append(f"{tag}: try {run.tries}, rate from {run.rate_from}"
                                  + ("" if run.p50_us is not None or c != 1 else ", no p50 (perf_analyzer killed)"))

    def inferd(self, system, binary, rnd):
        proc, shown = start(OUT, f"{system}-r{rnd}", self.a.port, binary=binary, new_session=True,
                            repository=OUT / "models")
        self.commands.setdefault(system, "setsid " + shown)
        try:
            self.measure_server(system, "inferd", self.a.port, lambda: session_cpu_ticks(proc.pid), rnd)
        finally:
            stop_session(proc.pid, proc)

    def triton(self, rnd):
        print("bench_overhead: starting the Triton peer", file=sys.stderr)
        sid, shown = start_peer(self.a.triton_port, PEER_SPECS)
        self.commands.setdefault("triton", shown)
        try:
            self.measure_server("triton", "triton", self.a.triton_port, lambda: session_cpu_ticks(sid), rnd)
        finally:
            stop_session(sid)

    def median(self, system, model, protocol, c, field):
        values = [getattr(r, field) for r in self.results.get((system, model, protocol, c), [])]
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None


def fmt(v, digits=0):
    return "–" if v is None else f"{v:,.{digits}f}"


def ratio(a, b):
    return f"{a / b:.1f}×" if a is not None and b else "–"


def report(b, a, memcpy, started, load_before, elapsed):
    systems = ["before", "after"] + ([] if a.no_triton else ["triton"])
    names = {"before": "inferd before", "after": "inferd after", "triton": "Triton"}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    cpu_model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                      if line.startswith("model name")), platform.machine())
    argv = " ".join(shlex.quote(x) for x in sys.argv[1:])
    out = [f"- date: {started:%Y-%m-%d %H:%M} UTC; {a.rounds} round(s), {elapsed / 60:.0f} min",
           f"- commit: `{commit}`" + (" (working tree with uncommitted changes)" if dirty else ""),
           "- " + binary_line("before", a.before), "- " + binary_line("after", a.after),
           f"- machine: {os.cpu_count()} CPUs, {cpu_model}; perf_analyzer (the client) shares them with the "
           f"server, so infer/s is capped by the client's own CPU (~90-130 µs per request) and server CPU per "
           f"request is the machine-independent figure; load average before the run "
           f"{' '.join(f'{x:.2f}' for x in load_before)}",
           "- servers one at a time (inferd before/after alternating per round, then the Triton peer), each "
           "warmed up first; perf_analyzer 2.50 `--request-count` runs, batch 1, random data, watched from "
           "outside (`scripts/perf_common.py` `measure_watched`); medians over the rounds",
           "- infer/s: requests / (last response − first send) from `--profile-export-file`; identity_image: the "
           "server's success count over the span polled every 50 ms (the export would hold every tensor)",
           "- server CPU µs/request: utime + stime of every process in the server's session (`/proc`), over the "
           "successes its statistics endpoint counted; p50 from perf_analyzer's CSV, at c=1 only"]
    if not a.no_triton:
        out.append("- Triton: 2.51 via PyTriton 0.7.0 (`scripts/peer_triton.sh`), Python backend (mlp through "
                   "onnxruntime 1.31.1, one thread; identities in numpy), dynamic batcher with 100 µs delay, max "
                   "batch 64; its Python backend adds a process hop per batch that Triton's native ONNX Runtime "
                   "backend would not")
    head = "| model | protocol | c |" + "".join(
        f" {names[s]} infer/s | {names[s]} CPU µs/req | {names[s]} p50 µs |" for s in systems)
    head += " Triton CPU / inferd after CPU |" if not a.no_triton else ""
    cols = 3 + 3 * len(systems) + (0 if a.no_triton else 1)
    out += ["", head, "|" + "---|" * cols]
    for model, protocol, c in SMALL:
        row = f"| {model} | {protocol} | {c} |"
        for s in systems:
            p50 = b.median(s, model, protocol, c, "p50_us") if c == 1 else None
            row += (f" {fmt(b.median(s, model, protocol, c, 'rate'))} | {fmt(b.median(s, model, protocol, c, 'cpu_us'))}"
                    f" | {fmt(p50) if c == 1 else ''} |")
        if not a.no_triton:
            row += f" {ratio(b.median('triton', model, protocol, c, 'cpu_us'), b.median('after', model, protocol, c, 'cpu_us'))} |"
        out.append(row)

    out += ["", f"Large tensors: identity_image, FP32 [3,224,224] = {IMAGE_BYTES:,} bytes in and out per request; "
            "GB/s = 2 × 602,112 bytes × infer/s.", ""]
    head = "| protocol | c |" + "".join(
        f" {names[s]} infer/s | {names[s]} GB/s | {names[s]} CPU µs/req |" for s in systems)
    head += " Triton CPU / inferd after CPU |" if not a.no_triton else ""
    out += [head, "|" + "---|" * (2 + 3 * len(systems) + (0 if a.no_triton else 1))]
    for model, protocol, c in LARGE:
        row = f"| {protocol} | {c} |"
        for s in systems:
            rate = b.median(s, model, protocol, c, "rate")
            gbs = None if rate is None else 2 * IMAGE_BYTES * rate / 1e9
            row += f" {fmt(rate)} | {fmt(gbs, 2)} | {fmt(b.median(s, model, protocol, c, 'cpu_us'))} |"
        if not a.no_triton:
            row += f" {ratio(b.median('triton', model, protocol, c, 'cpu_us'), b.median('after', model, protocol, c, 'cpu_us'))} |"
        out.append(row)
    out += ["", f"For scale, a plain memcpy on the same machine: {memcpy:.1f} GB/s (libc memcpy through "
            "`ctypes.memmove`, 602,112 bytes from one buffer into another in a loop, one thread, cache-warm; "
            "bytes copied per second, median of 5 half-second timings)."]

    out += ["", "Commands (`perf_analyzer` = `.perf_analyzer/bin/perf_analyzer`; `-rN` = the round):", "", "```",
            f"scripts/bench_overhead.py {argv}"]
    for key in ("before", "after", "triton"):
        if key in b.commands:
            out.append(b.commands[key])
    for kind in ("inferd", "triton"):
        for model, protocol, c in SMALL + LARGE:
            if (kind, model, protocol, c) in b.commands:
                out.append(b.commands[(kind, model, protocol, c)])
    out.append("```")
    if b.notes:
        out += ["", "Runs repeated, or timed from the server's count because perf_analyzer 2.50 hung after the last "
                "answer and was killed:", ""] + [f"- {n}" for n in b.notes]
    if b.failures:
        out += ["", "Failures:", ""] + [f"- {f}" for f in b.failures]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", type=Path, required=True, help="inferd binary before the change")
    ap.add_argument("--after", type=Path, required=True, help="inferd binary after the change")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-triton", action="store_true", help="leave the Triton peer out")
    ap.add_argument("--record", action="store_true", help="write the report into benches/RESULTS.md")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every run's request count")
    ap.add_argument("--port", type=int, default=18700, help="inferd's HTTP port (gRPC +1, metrics +2)")
    ap.add_argument("--triton-port", type=int, default=18800, help="the peer's HTTP port (gRPC +1, metrics +2)")
    a = ap.parse_args()
    for label in ("before", "after"):
        path = getattr(a, label).resolve()
        if not path.is_file() or not os.access(path, os.X_OK):
            ap.error(f"--{label} {path}: not an executable file")
        setattr(a, label, path)
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    ports = [a.port + i for i in range(3)] + ([] if a.no_triton else [a.triton_port + i for i in range(3)])
    busy = [p for p in ports if not port_free(p)]
    if busy:
        sys.exit(f"bench_overhead: ports in use: {busy} (another server running? see --port / --triton-port)")

    shutil.rmtree(OUT, ignore_errors=True)
    for model in MODELS:  # a repository with only the models measured: quicker starts, nothing else loaded
        shutil.copytree(ROOT / "models" / model, OUT / "models" / model)
    pa = perf_analyzer()
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before, t0 = os.getloadavg(), time.monotonic()
    b = Bench(a, pa)
    for rnd in range(1, a.rounds + 1):
        order = [("before", a.before), ("after", a.after)]
        for system, binary in order if rnd % 2 else order[::-1]:
            b.inferd(system, binary, rnd)
        if not a.no_triton:
            b.triton(rnd)
    memcpy = memcpy_gbs()
    text = report(b, a, memcpy, started, load_before, time.monotonic() - t0)
    print(text)
    if a.record:
        replace_section("overhead", "Serving overhead before and after, beside Triton (issue 17)", text)
        print("bench_overhead: wrote benches/RESULTS.md", file=sys.stderr)
    return 1 if b.failures else 0


if __name__ == "__main__":
    sys.exit(main())
