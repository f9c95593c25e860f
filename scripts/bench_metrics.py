#!/usr/bin/env python3
"""What metrics cost: perf_analyzer at concurrency 32 on the example MLP against two inferd servers run side
by side, one with metrics on (scraped every second, harsher than Prometheus' usual 15 s) and one with
`--allow-metrics false`, in alternating rounds so that both see the same machine. Reports throughput and
server CPU per request (utime+stime of the server process over the successful requests its statistics
counted), the medians over the rounds, and the cost of metrics; writes them into benches/RESULTS.md between
<!-- bench:metrics:start --> and <!-- bench:metrics:end -->.

    scripts/bench_metrics.py [--rounds 5] [--requests 60000] [--protocols grpc,http]

Run `make build` (release) first; `make bench-metrics` does both.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
OUT = ROOT / "target" / "bench-metrics"
HZ = os.sysconf("SC_CLK_TCK")


def start(name, port, extra):
    log = open(OUT / f"{name}.log", "w")
    cmd = [str(ROOT / "target/release/inferd"), "serve", "--model-repository", str(ROOT / "models"),
           "--http-port", str(port), "--grpc-port", str(port + 1), "--metrics-port", str(port + 2), *extra]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
            return proc, " ".join(cmd[1:]).replace(str(ROOT) + "/", "")
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"{name} exited during start-up; see {OUT / (name + '.log')}")
            time.sleep(0.25)
    sys.exit(f"{name} not ready after 60 s")


def cpu_ticks(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def successes(port):
    import json
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/mlp/stats", timeout=5) as r:
        return sum(int(m["inference_stats"]["success"]["count"]) for m in json.load(r)["model_stats"])


def rate_from_export(path):
    """Requests over the span from the first send to the last response (perf_analyzer 2.50 divides a
    --request-count run by whole seconds)."""
    text = path.read_bytes()
    starts = [int(m) for m in re.findall(rb'"timestamp":(\d+)', text)]
    ends = [int(m.split(b",")[-1]) for m in re.findall(rb'"response_timestamps":\[([0-9,]+)\]', text)]
    return len(ends) / ((max(ends) - min(starts)) / 1e9)


def run(pa, proc, port, protocol, requests, tag):
    url = f"127.0.0.1:{port + 1 if protocol == 'grpc' else port}"
    export = OUT / f"{tag}.json"
    export.unlink(missing_ok=True)
    cmd = [pa, "-m", "mlp", "-i", protocol, "-u", url, "-b", "1", "--concurrency-range", "32",
           "--request-count", str(requests), "--profile-export-file", str(export)]
    n0, c0 = successes(port), cpu_ticks(proc.pid)
    for attempt in range(3):
        try:
            subprocess.run(cmd, stdout=open(OUT / f"{tag}.log", "w"), stderr=subprocess.STDOUT, timeout=30,
                           check=True)
            break
        except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as e:
            # perf_analyzer 2.50 now and then never ends a --request-count run; measure again.
            print(f"  {tag}: perf_analyzer {type(e).__name__} (try {attempt + 1})", file=sys.stderr)
            export.unlink(missing_ok=True)
            n0, c0 = successes(port), cpu_ticks(proc.pid)
    else:
        sys.exit(f"{tag}: perf_analyzer failed three times")
    c1, n1 = cpu_ticks(proc.pid), successes(port)
    rate = rate_from_export(export)
    export.unlink()
    return rate, (c1 - c0) / HZ / max(n1 - n0, 1) * 1e6, " ".join(["perf_analyzer", *cmd[1:]]).replace(str(OUT) + "/", "")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=60000)
    ap.add_argument("--protocols", default="grpc,http")
    ap.add_argument("--port-base", type=int, default=18300)
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    pa = subprocess.run([str(SHARED / "bench/install-perf-analyzer.sh"), str(ROOT / ".perf_analyzer")],
                        capture_output=True, text=True, check=True).stdout.strip()
    on, on_cmd = start("metrics-on", a.port_base, [])
    off, off_cmd = start("metrics-off", a.port_base + 10, ["--allow-metrics", "false"])
    stop = threading.Event()
    scrapes = [0]

    def scrape():
        while not stop.wait(1.0):
            with urllib.request.urlopen(f"http://127.0.0.1:{a.port_base + 2}/metrics", timeout=5) as r:
                r.read()
            scrapes[0] += 1

    threading.Thread(target=scrape, daemon=True).start()
    results = {}
    pa_cmd = ""
    try:
        for protocol in a.protocols.split(","):
            for config, proc, port in [("on", on, a.port_base), ("off", off, a.port_base + 10)]:
                run(pa, proc, port, protocol, 5000, f"warmup-{config}-{protocol}")
            for r in range(a.rounds):
                # Alternate which goes first, so a drift in the machine's load falls on both alike.
                order = [("on", on, a.port_base), ("off", off, a.port_base + 10)]
                for config, proc, port in order if r % 2 == 0 else order[::-1]:
                    rate, cpu, pa_cmd = run(pa, proc, port, protocol, a.requests, f"{config}-{protocol}-{r}")
                    results.setdefault((protocol, config), []).append((rate, cpu))
                    print(f"{protocol} metrics {config} round {r + 1}: {rate:.0f} infer/s, {cpu:.1f} us CPU/request",
                          file=sys.stderr)
    finally:
        stop.set()
        on.terminate()
        off.terminate()

    shown_cmd = re.sub(r"(on|off)-[a-z]+-[0-9]+\.json", "RUN.json", pa_cmd)
    lines = [
        "<!-- bench:metrics:start -->",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `scripts/bench_metrics.py --rounds {a.rounds} "
        f"--requests {a.requests}` (2 shared cores; both servers up side by side, runs alternating; metrics "
        f"scraped every second during the metrics-on runs, {scrapes[0]} scrapes in all).",
        "",
        f"- metrics on: `{on_cmd}`",
        f"- metrics off: `{off_cmd}`",
        f"- each run: `{shown_cmd}`",
        "",
        "| protocol | metrics | infer/s (median) | server CPU µs/request (median) | runs (infer/s) |",
        "|---|---|---|---|---|",
    ]
    summary = []
    for protocol in a.protocols.split(","):
        med = {}
        for config in ("on", "off"):
            rows = results[(protocol, config)]
            med[config] = (statistics.median(r for r, _ in rows), statistics.median(c for _, c in rows))
            runs = ", ".join(f"{r:.0f}" for r, _ in rows)
            lines.append(f"| {protocol} | {config} | {med[config][0]:.0f} | {med[config][1]:.1f} | {runs} |")
        cost_rate = (med["off"][0] - med["on"][0]) / med["off"][0] * 100
        cost_cpu = (med["on"][1] - med["off"][1]) / med["off"][1] * 100
        summary.append(f"- {protocol}: throughput cost of metrics {cost_rate:+.1f}% (positive = slower with "
                       f"metrics), CPU per request {cost_cpu:+.1f}%.")
    lines += ["", *summary, "<!-- bench:metrics:end -->"]
    block = "\n".join(lines)
    print(block)
    results_md = ROOT / "benches/RESULTS.md"
    text = results_md.read_text()
    pattern = re.compile(r"<!-- bench:metrics:start -->.*?<!-- bench:metrics:end -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text += "\n## Cost of metrics (issue 5)\n\n" + block + "\n"
    results_md.write_text(text)


if __name__ == "__main__":
    main()
