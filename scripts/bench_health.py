#!/usr/bin/env python3
"""What model health costs: perf_analyzer at concurrency 32, batch 1, on the example MLP against two inferd
servers run side by side, in alternating rounds so that both see the same machine:

- on:  a copy of models/mlp with a reference profile (so drift is watched: default window of 1000 rows,
       every row sampled) and value rules on INPUT (min -100, max 100, no NaN; mode reject), so every request
       is checked at the door and every row binned;
- off: the same model without profile and rules.

Both get the same standard-normal inputs (--input-data, seeded), which pass the rules and fill drift windows.
Reports per protocol throughput and server CPU per request (utime+stime of the server process over the
successful requests its statistics counted), the medians over the rounds and the difference; checks that the
"on" server completed drift windows and that no request failed; writes them into benches/RESULTS.md between
<!-- bench:health:start --> and <!-- bench:health:end -->.

    scripts/bench_health.py [--rounds 3] [--requests 20000] [--protocols grpc,http] [--no-record]

Run `make build` (release) first; `make bench-health` does both.
"""
import argparse
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from perf_common import HZ, ROOT, cpu_ticks, on_off_table, perf_analyzer, rate_from_export, replace_section, successes

OUT = ROOT / "target" / "bench-health"
INFERD = ROOT / "target/release/inferd"
RULES = {"validate.INPUT.min": "-100", "validate.INPUT.max": "100", "validate.INPUT.allow_nan": "false"}


def load():
    return os.getloadavg()[0]


def busy_seconds():
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / HZ


def own_seconds(procs):
    """CPU seconds of this script, its finished children (perf_analyzer) and the servers."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + sum(cpu_ticks(p.pid) for p in procs) / HZ


def write_npy(path, rows):
    """A float32 .npy of `rows` (lists of equal length), without NumPy."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({len(rows)}, {len(rows[0])}), }}"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        for row in rows:
            f.write(struct.pack(f"<{len(row)}f", *row))


def measure(pa, proc, port, protocol, requests, tag, extra):
    """perf_common.measure with a timeout that fits the run (perf_analyzer 2.50 now and then never ends a
    --request-count run; 60 s per hang would eat the budget): (infer/s, server CPU µs per request, command as
    shown). A run that hangs is killed and tried again, up to five times."""
    url = f"127.0.0.1:{port + 1 if protocol == 'grpc' else port}"
    export, csv = OUT / f"{tag}.json", OUT / f"{tag}.csv"
    cmd = [pa, "-m", "mlp", "-i", protocol, "-u", url, "-b", "1", "--concurrency-range", "32",
           "--request-count", str(requests), *extra, "-f", str(csv), "--profile-export-file", str(export)]
    for attempt in range(5):
        export.unlink(missing_ok=True)
        n0, c0 = successes(port, "mlp"), cpu_ticks(proc.pid)
        try:
            subprocess.run(cmd, stdout=open(OUT / f"{tag}.log", "w"), stderr=subprocess.STDOUT,
                           timeout=10 + requests / 1000, check=True)
            break
        except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as e:
            print(f"  {tag}: perf_analyzer {type(e).__name__} (try {attempt + 1})", file=sys.stderr)
    else:
        sys.exit(f"{tag}: perf_analyzer failed five times; see {OUT / (tag + '.log')}")
    c1, n1 = cpu_ticks(proc.pid), successes(port, "mlp")
    rate = rate_from_export(export)
    export.unlink()
    shown = " ".join(["perf_analyzer", *cmd[1:]]).replace(str(OUT) + "/", "").replace(str(ROOT) + "/", "")
    return rate, (c1 - c0) / HZ / max(n1 - n0, 1) * 1e6, shown


def make_repo(root, params, profile):
    """A repository holding only a copy of models/mlp (config, model; no profile unless given), with `params`
    added to its config."""
    (root / "mlp/1").mkdir(parents=True)
    config = (ROOT / "models/mlp/config.pbtxt").read_text()
    for key, value in params.items():
        config += f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
    (root / "mlp/config.pbtxt").write_text(config)
    shutil.copy(ROOT / "models/mlp/1/model.onnx", root / "mlp/1/model.onnx")
    if profile:
        shutil.copy(profile, root / "mlp/1/profile.json")


def make_profile(tmp):
    """The shipped models/mlp/1/profile.json if there is one, else one made by `inferd profile` from 5000
    standard-normal rows. Returns its path and where it came from."""
    shipped = ROOT / "models/mlp/1/profile.json"
    if shipped.is_file():
        return shipped, "models/mlp/1/profile.json"
    repo = tmp / "profile-repo"
    make_repo(repo, {}, None)
    rng = random.Random(3)
    data = tmp / "standard_normal_5000x64.npy"
    write_npy(data, [[rng.gauss(0, 1) for _ in range(64)] for _ in range(5000)])
    out = tmp / "profile.json"
    subprocess.run([str(INFERD), "profile", "--model-repository", str(repo), "--model", "mlp", "--data", str(data),
                    "--classifier", "OUTPUT", "--out", str(out)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return out, "`inferd profile` of 5000 standard-normal rows (OUTPUT as a classifier)"


def start(repo, name, port):
    """target/release/inferd serving `repo` on port (HTTP), port+1 (gRPC), port+2 (metrics); waits until
    ready. Returns the process and the command line as the results should show it."""
    log = open(OUT / f"{name}.log", "w")
    cmd = [str(INFERD), "serve", "--model-repository", str(repo), "--http-port", str(port), "--grpc-port",
           str(port + 1), "--metrics-port", str(port + 2)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    for _ in range(480):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/mlp/ready", timeout=1)
            shown = "inferd " + " ".join(cmd[1:]).replace(str(repo), f"<{name} repository>")
            return proc, shown
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"{name} exited during start-up; see {OUT / (name + '.log')}")
            time.sleep(0.25)
    sys.exit(f"{name} not ready after 120 s")


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.load(r)


def counts(port):
    """(successful, failed) requests the server's statistics counted for mlp."""
    stats = get(port, "/v2/models/mlp/stats")["model_stats"]
    return (sum(int(m["inference_stats"]["success"]["count"]) for m in stats),
            sum(int(m["inference_stats"]["fail"]["count"]) for m in stats))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--protocols", default="grpc,http")
    ap.add_argument("--port-base", type=int, default=18400)
    ap.add_argument("--no-record", action="store_true", help="print the results, leave RESULTS.md alone")
    a = ap.parse_args()
    if not INFERD.exists():
        sys.exit(f"{INFERD} is missing: run `make build` first")
    OUT.mkdir(parents=True, exist_ok=True)
    pa = perf_analyzer()
    tmp = Path(tempfile.mkdtemp(prefix="bench-health-"))
    on_port, off_port = a.port_base, a.port_base + 10
    load_before = os.getloadavg()
    loads = [load_before[0]]
    try:
        profile, profile_from = make_profile(tmp)
        make_repo(tmp / "on", RULES, profile)
        make_repo(tmp / "off", {}, None)
        # The same 1000 standard-normal rows for both arms, cycled through: inside the rules, and like the
        # reference, so drift windows fill with no drift to speak of.
        rng = random.Random(7)
        data = OUT / "input-normal.json"
        data.write_text(json.dumps({"data": [{"INPUT": [round(rng.gauss(0, 1), 5) for _ in range(64)]}
                                             for _ in range(1000)]}))
        extra = ["--input-data", str(data)]
        on, on_cmd = start(tmp / "on", "on", on_port)
        off, off_cmd = start(tmp / "off", "off", off_port)
        try:
            get(off_port, "/v2/models/mlp/drift")
            sys.exit("the off server watches drift; it should not")
        except urllib.error.HTTPError:
            pass
        arms = [("on", on, on_port), ("off", off, off_port)]
        results, pa_cmd = {}, ""
        busy0, own0, t0 = busy_seconds(), own_seconds([on, off]), time.monotonic()
        try:
            for protocol in a.protocols.split(","):
                for config, proc, port in arms:
                    measure(pa, proc, port, protocol, min(5000, a.requests), f"warmup-{config}-{protocol}", extra)
                for r in range(a.rounds):
                    # Alternate which goes first, so a drift in the machine's load falls on both alike.
                    for config, proc, port in arms if r % 2 == 0 else arms[::-1]:
                        rate, cpu, pa_cmd = measure(pa, proc, port, protocol, a.requests, f"{config}-{protocol}-{r}",
                                                    extra)
                        results.setdefault((protocol, config), []).append((rate, cpu))
                        loads.append(load())
                        print(f"{protocol} health {config} round {r + 1}: {rate:.0f} infer/s, {cpu:.1f} us "
                              f"CPU/request (load {loads[-1]:.1f})", file=sys.stderr)
            others = (busy_seconds() - busy0 - (own_seconds([on, off]) - own0)) / (time.monotonic() - t0)
            drift = get(on_port, "/v2/models/mlp/drift")
            (on_ok, on_failed), (off_ok, off_failed) = counts(on_port), counts(off_port)
        finally:
            on.terminate()
            off.terminate()
            on.wait()
            off.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()

    problems = []
    if drift["windows_completed"] < 1:
        problems.append(f"the on server completed no drift window: {drift}")
    if on_failed or off_failed:
        problems.append(f"failed requests: on {on_failed}, off {off_failed}")

    shown_cmd = re.sub(r"(on|off)-[a-z]+-[0-9]+\.(json|csv)", r"RUN.\2", pa_cmd)
    shown_cmd = re.sub(r"-i [a-z]+ -u 127\.0\.0\.1:[0-9]+", "-i grpc|http -u SERVER", shown_cmd)
    args = f"--rounds {a.rounds} --requests {a.requests}" + (
        f" --protocols {a.protocols}" if a.protocols != "grpc,http" else "")
    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `scripts/bench_health.py {args}` "
        f"(2 shared cores; both servers up side by side, runs alternating; 1-minute load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after, highest seen between runs {max(loads):.1f}; "
        f"processes other than the servers and perf_analyzer used {others:.2f} cores on average during the runs"
        + (", so other work shared the machine meanwhile)." if others > 0.2 else ")."),
        "",
        f"- health on: `{on_cmd}`; its mlp has the profile ({profile_from}) and "
        + ", ".join(f"`{k}: \"{v}\"`" for k, v in RULES.items())
        + " (mode reject); drift window 1000 rows, sample 1.0 (the defaults)",
        "- health off: the same model without profile and rules",
        f"- each run: `{shown_cmd}` (SERVER: the server's gRPC or HTTP port; `input-normal.json`: 1000 "
        "standard-normal rows of 64, seeded, the same for both)",
        f"- at the end: the on server had completed {drift['windows_completed']} drift windows (psi_max "
        f"{drift['psi_max']:.3f}); failed requests: on {on_failed} of {on_ok + on_failed}, "
        f"off {off_failed} of {off_ok + off_failed}",
        "",
        *on_off_table(results, a.protocols.split(","), "health", "drift + validation", "; the issue allows 3%"),
    ]
    block = "\n".join(lines)
    print(block)
    if problems:
        sys.exit("\n".join(problems))
    if not a.no_record:
        replace_section("health", "Cost of model health (issue 15)", block)


if __name__ == "__main__":
    main()
