"""What the benchmark scripts share: starting a release server, reading its CPU time and its own count of
successful requests, and one perf_analyzer run in --request-count mode with the rate taken from its profile
export (perf_analyzer 2.50 divides such a run by whole seconds, and now and then never ends one)."""
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
HZ = os.sysconf("SC_CLK_TCK")


def perf_analyzer():
    """Installs perf_analyzer (from the tritonclient wheel) once, into .perf_analyzer; returns its path."""
    return subprocess.run([str(SHARED / "bench/install-perf-analyzer.sh"), str(ROOT / ".perf_analyzer")],
                          capture_output=True, text=True, check=True).stdout.strip()


def start(out, name, port, extra=(), repository=ROOT / "models"):
    """Starts target/release/inferd on port (HTTP), port+1 (gRPC), port+2 (metrics); waits until ready.
    Returns the process and the command line as the results should show it."""
    log = open(out / f"{name}.log", "w")
    cmd = [str(ROOT / "target/release/inferd"), "serve", "--model-repository", str(repository),
           "--http-port", str(port), "--grpc-port", str(port + 1), "--metrics-port", str(port + 2), *extra]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    for _ in range(480):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
            return proc, "inferd " + " ".join(cmd[1:]).replace(str(ROOT) + "/", "")
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"{name} exited during start-up; see {out / (name + '.log')}")
            time.sleep(0.25)
    sys.exit(f"{name} not ready after 120 s")


def cpu_ticks(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def successes(port, model):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{model}/stats", timeout=5) as r:
        return sum(int(m["inference_stats"]["success"]["count"]) for m in json.load(r)["model_stats"])


def rate_from_export(path):
    """Requests over the span from the first send to the last response."""
    text = path.read_bytes()
    starts = [int(m) for m in re.findall(rb'"timestamp":(\d+)', text)]
    ends = [int(m.split(b",")[-1]) for m in re.findall(rb'"response_timestamps":\[([0-9,]+)\]', text)]
    return len(ends) / ((max(ends) - min(starts)) / 1e9)


def measure(pa, out, proc, port, model, protocol, concurrency, requests, tag, extra=()):
    """One perf_analyzer run against the server on `port`: (infer/s, server CPU µs per request, p50 µs,
    command as shown). A run that hangs is killed after 60 s and tried again, up to three times."""
    url = f"127.0.0.1:{port + 1 if protocol == 'grpc' else port}"
    export, csv = out / f"{tag}.json", out / f"{tag}.csv"
    cmd = [pa, "-m", model, "-i", protocol, "-u", url, "-b", "1", "--concurrency-range", str(concurrency),
           "--request-count", str(requests), *extra, "-f", str(csv), "--profile-export-file", str(export)]
    for attempt in range(3):
        export.unlink(missing_ok=True)
        n0, c0 = successes(port, model), cpu_ticks(proc.pid)
        try:
            subprocess.run(cmd, stdout=open(out / f"{tag}.log", "w"), stderr=subprocess.STDOUT, timeout=60,
                           check=True)
            break
        except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as e:
            print(f"  {tag}: perf_analyzer {type(e).__name__} (try {attempt + 1})", file=sys.stderr)
    else:
        sys.exit(f"{tag}: perf_analyzer failed three times; see {out / (tag + '.log')}")
    c1, n1 = cpu_ticks(proc.pid), successes(port, model)
    rate = rate_from_export(export)
    export.unlink()
    p50 = 0.0
    if csv.exists():
        import csv as csvlib
        with open(csv, newline="") as f:
            p50 = float(next(csvlib.DictReader(f)).get("p50 latency") or 0)
    shown = " ".join(["perf_analyzer", *cmd[1:]]).replace(str(out) + "/", "").replace(str(ROOT) + "/", "")
    return rate, (c1 - c0) / HZ / max(n1 - n0, 1) * 1e6, p50, shown


def replace_section(name, title, block):
    """Puts `block` into benches/RESULTS.md between <!-- bench:NAME:start --> and <!-- bench:NAME:end -->,
    appending a section titled `title` the first time."""
    results = ROOT / "benches/RESULTS.md"
    text = results.read_text()
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{block}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text + f"\n## {title}\n\n{block}\n"
    results.write_text(text)


def on_off_table(results, protocols, column, cost_of, note=""):
    """Markdown rows for an on/off comparison: per protocol the medians over the rounds of throughput and server
    CPU per request, each run's throughput, then the cost of `cost_of` per protocol. `results[(protocol,
    "on"|"off")]` holds (infer/s, CPU µs per request) per round."""
    import statistics

    lines = [
        f"| protocol | {column} | infer/s (median) | server CPU µs/request (median) | runs (infer/s) |",
        "|---|---|---|---|---|",
    ]
    summary = []
    for protocol in protocols:
        med = {}
        for config in ("on", "off"):
            rows = results[(protocol, config)]
            med[config] = (statistics.median(r for r, _ in rows), statistics.median(c for _, c in rows))
            runs = ", ".join(f"{r:.0f}" for r, _ in rows)
            lines.append(f"| {protocol} | {config} | {med[config][0]:.0f} | {med[config][1]:.1f} | {runs} |")
        cost_rate = (med["off"][0] - med["on"][0]) / med["off"][0] * 100
        cost_cpu = (med["on"][1] - med["off"][1]) / med["off"][1] * 100
        summary.append(f"- {protocol}: throughput cost of {cost_of} {cost_rate:+.1f}% (positive = slower with "
                       f"{column} on{note}), CPU per request {cost_cpu:+.1f}% "
                       f"({med['on'][1] - med['off'][1]:+.1f} µs).")
    return lines + ["", *summary]

