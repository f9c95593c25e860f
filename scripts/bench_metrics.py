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
import re
import sys
import threading
import time
import urllib.request

from perf_common import ROOT, measure, on_off_table, perf_analyzer, replace_section, start

OUT = ROOT / "target" / "bench-metrics"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=60000)
    ap.add_argument("--protocols", default="grpc,http")
    ap.add_argument("--port-base", type=int, default=18300)
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    pa = perf_analyzer()
    on, on_cmd = start(OUT, "metrics-on", a.port_base)
    off, off_cmd = start(OUT, "metrics-off", a.port_base + 10, ["--allow-metrics", "false"])
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
                measure(pa, OUT, proc, port, "mlp", protocol, 32, 5000, f"warmup-{config}-{protocol}")
            for r in range(a.rounds):
                # Alternate which goes first, so a drift in the machine's load falls on both alike.
                order = [("on", on, a.port_base), ("off", off, a.port_base + 10)]
                for config, proc, port in order if r % 2 == 0 else order[::-1]:
                    rate, cpu, _, pa_cmd = measure(pa, OUT, proc, port, "mlp", protocol, 32, a.requests,
                                                   f"{config}-{protocol}-{r}")
                    results.setdefault((protocol, config), []).append((rate, cpu))
                    print(f"{protocol} metrics {config} round {r + 1}: {rate:.0f} infer/s, {cpu:.1f} us CPU/request",
                          file=sys.stderr)
    finally:
        stop.set()
        on.terminate()
        off.terminate()

    shown_cmd = re.sub(r"(on|off)-[a-z]+-[0-9]+\.(json|csv)", r"RUN.\2", pa_cmd)
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `scripts/bench_metrics.py --rounds {a.rounds} "
        f"--requests {a.requests}` (2 shared cores; both servers up side by side, runs alternating; metrics "
        f"scraped every second during the metrics-on runs, {scrapes[0]} scrapes in all).",
        "",
        f"- metrics on: `{on_cmd}`",
        f"- metrics off: `{off_cmd}`",
        f"- each run: `{shown_cmd}`",
        "",
        *on_off_table(results, a.protocols.split(","), "metrics", "metrics"),
    ]
    block = "\n".join(lines)
    print(block)
    replace_section("metrics", "Cost of metrics (issue 5)", block)

if __name__ == "__main__":
    main()
