"""What the benchmark scripts share: starting a release server, reading its CPU time and its own count of
successful requests, and one perf_analyzer run in --request-count mode with the rate taken from its profile
export (perf_analyzer 2.50 divides such a run by whole seconds, and now and then never ends one). The tools
themselves (perf_analyzer's installer, the Triton peer) are in scripts/, so a bare clone can run every bench."""
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
HZ = os.sysconf("SC_CLK_TCK")


def perf_analyzer():
    """Installs perf_analyzer (from the tritonclient wheel) once, into .perf_analyzer; returns its path."""
    return subprocess.run([str(SCRIPTS / "install_perf_analyzer.sh"), str(ROOT / ".perf_analyzer")],
                          capture_output=True, text=True, check=True).stdout.strip()


def start(out, name, port, extra=(), repository=ROOT / "models", binary=ROOT / "target/release/inferd",
          new_session=False):
    """Starts inferd (target/release/inferd unless `binary` says otherwise) on port (HTTP), port+1 (gRPC),
    port+2 (metrics); waits until ready. With new_session it leads its own session, whose processes
    session_cpu_ticks can then add up. Returns the process and the command line as the results should show it."""
    log = open(out / f"{name}.log", "w")
    cmd = [str(binary), "serve", "--model-repository", str(repository),
           "--http-port", str(port), "--grpc-port", str(port + 1), "--metrics-port", str(port + 2), *extra]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=new_session)
    for _ in range(480):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1)
            shown = " ".join(cmd[1:]).replace(str(ROOT) + "/", "")
            return proc, ("inferd" if Path(binary) == ROOT / "target/release/inferd" else str(binary)) + " " + shown
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
    p50 = csv_p50(csv) or 0.0
    shown = " ".join(["perf_analyzer", *cmd[1:]]).replace(str(out) + "/", "").replace(str(ROOT) + "/", "")
    return rate, (c1 - c0) / HZ / max(n1 - n0, 1) * 1e6, p50, shown


def session_cpu_ticks(sid):
    """User + system clock ticks of every live process in session `sid` (a server and all it started, as the
    Triton peer's Python backend stubs). Processes that ended take their ticks with them, so a session's
    processes should outlive the measurement, as servers' do."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        if fields[3] == str(sid) and fields[0] != "Z":
            total += int(fields[11]) + int(fields[12])
    return total


def stop_session(sid, proc=None, wait_s=20):
    """SIGTERM to process group `sid` (a session leader's group), SIGKILL to what is left after wait_s; returns
    once no live process of the session remains, so that the next server finds its ports and cores free."""
    import signal

    for sig, wait in ((signal.SIGTERM, wait_s), (signal.SIGKILL, 5)):
        try:
            os.killpg(sid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reaps our own child, which would stay in the session as a zombie
            if not any(_session_of(stat) == str(sid) for stat in Path("/proc").glob("[0-9]*/stat")):
                return
            time.sleep(0.2)


def _session_of(stat):
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[3]


def start_peer(port, specs, venv=ROOT / ".peer", extra=()):
    """Starts the Triton peer (scripts/peer_triton.sh; its first run installs it) with NAME=SPEC models on port
    (HTTP), port+1 (gRPC), port+2 (metrics). Returns its session id (= process group id) and the command as
    the results should show it."""
    cmd = [str(SCRIPTS / "peer_triton.sh"), str(venv), "--port-base", str(port), *extra, *specs]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    if r.returncode != 0 or not r.stdout.strip().isdigit():
        sys.exit(f"the Triton peer did not start (exit {r.returncode}); see {venv}/peer-{port}.log")
    return int(r.stdout.strip()), " ".join(cmd).replace(str(ROOT) + "/", "")


class PerfAnalyzerFailed(RuntimeError):
    """perf_analyzer gave no usable run in three tries."""


@dataclass
class Run:
    """One perf_analyzer --request-count run as measure_watched saw it."""
    rate: float  # requests answered per second
    cpu_us: float  # server CPU per request the server counted
    p50_us: float | None  # from perf_analyzer's CSV; None when it was killed before writing one
    requests: int  # successful requests the server counted during the run
    rate_from: str  # "export" (first send to last response) or "server count" (polled)
    tries: int
    shown: str


POLL_S = 0.05  # the server's count is read 20 times a second: a few µs of its CPU per second


def measure_watched(pa, out, tag, port, model, protocol, concurrency, requests, cpu, *, export=True,
                    need_p50=False, timeout=60, grace=10, extra=()):
    """One perf_analyzer --request-count run against the server on `port` (HTTP; gRPC on port+1), watched from
    outside: the server's success count is polled while it runs, and `cpu()` (clock ticks of the server) is
    read before and at the moment the server has answered all `requests`, which is also when the run is over
    for the rate. perf_analyzer 2.50 now and then never ends a run the server has answered (and ignores
    SIGTERM): it is killed `grace` seconds after the last answer, and the run still counts unless its p50 is
    needed (need_p50), which only its CSV holds; any run is killed after `timeout` seconds. Three tries.

    The rate is requests over first send to last response from --profile-export-file when `export` (the
    export holds every tensor, so leave it off for large ones), else the server's count over the polled span
    from its first to its last answer (±POLL_S at either end)."""
    url = f"127.0.0.1:{port + 1 if protocol == 'grpc' else port}"
    export_path, csv_path, log = out / f"{tag}.json", out / f"{tag}.csv", out / f"{tag}.log"
    cmd = [pa, "-m", model, "-i", protocol, "-u", url, "-b", "1", "--concurrency-range", str(concurrency),
           "--request-count", str(requests), *extra, "-f", str(csv_path)]
    if export:
        cmd += ["--profile-export-file", str(export_path)]
    shown = " ".join(["perf_analyzer", *cmd[1:]]).replace(str(out) + "/", "").replace(str(ROOT) + "/", "")
    fallback = None
    for attempt in range(1, 4):
        export_path.unlink(missing_ok=True)
        csv_path.unlink(missing_ok=True)
        n0, c0 = successes(port, model), cpu()
        t0 = time.monotonic()
        with open(log, "w") as f:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        first = done = None  # (time, count[, cpu ticks])
        rc = None
        while rc is None:
            try:
                rc = proc.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if done is None:
                try:
                    n = successes(port, model)
                except OSError:
                    n = n0
                if first is None and n > n0:
                    first = (now, n)
                if n >= n0 + requests:
                    done = (now, n, cpu())
            if now - t0 > timeout or (done is not None and now - done[0] > grace):
                proc.kill()
                proc.wait()
                break
        try:
            if done is None:
                done = (time.monotonic(), successes(port, model), cpu())
        except OSError as e:
            raise PerfAnalyzerFailed(f"{tag}: the server stopped answering its statistics endpoint: {e}") from e
        answered = done[1] - n0
        why = (f"exit {rc}" if rc else "ok") if rc is not None else (
            "killed: hung after the last answer" if answered >= requests else f"killed after {timeout} s")
        if (rc != 0 and answered < requests) or answered <= 0:
            print(f"  {tag}: perf_analyzer {why}, {answered} of {requests} answered (try {attempt})",
                  file=sys.stderr)
            continue
        rate, rate_from = None, "server count"
        if export and export_path.exists():
            try:
                rate, rate_from = rate_from_export(export_path), "export"
            except (ValueError, ZeroDivisionError):  # cut short by the kill
                pass
        export_path.unlink(missing_ok=True)
        if rate is None:
            if first is not None and done[0] > first[0] and done[1] > first[1]:
                rate = (done[1] - first[1]) / (done[0] - first[0])
            else:  # too short for two readings: the whole run, perf_analyzer's start included
                rate = answered / (done[0] - t0)
        run = Run(rate, (done[2] - c0) / HZ / answered * 1e6, csv_p50(csv_path), answered, rate_from, attempt,
                  shown)
        if rc != 0:
            print(f"  {tag}: perf_analyzer {why} (try {attempt})", file=sys.stderr)
        if run.p50_us is not None or not need_p50:
            return run
        fallback = run
    if fallback is not None:
        return fallback
    raise PerfAnalyzerFailed(f"{tag}: perf_analyzer failed three times; see {log}")


def csv_p50(path):
    """perf_analyzer's p50 latency in µs from its -f CSV, or None when it wrote none."""
    import csv

    try:
        with open(path, newline="") as f:
            row = next(csv.DictReader(f))
        return float(row["p50 latency"])
    except (OSError, StopIteration, KeyError, ValueError):
        return None


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


# The MiniLM graph in ONNX Runtime in-process, tokenised by the tokenizers package as sentence-transformers does
# (cut to 256 tokens, padded to the batch's longest). Each batch takes the next sentences of the input in turn, so
# every sentence length counts as it does against a server, not only the first sentences'.
ORT_TIMING = r"""
import json, sys, time
import numpy as np, onnxruntime as ort
from tokenizers import Tokenizer
texts = [d["TEXT"]["content"][0] for d in json.load(open(sys.argv[1]))["data"]]
tok = Tokenizer.from_file(sys.argv[2])
tok.enable_truncation(256)
tok.enable_padding()
opts = ort.SessionOptions()
opts.intra_op_num_threads = int(sys.argv[4])
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(sys.argv[3], opts, providers=["CPUExecutionProvider"])
seconds = float(sys.argv[5])
for batch in (1, 8, 32):
    def run(k):
        enc = tok.encode_batch([texts[(k * batch + i) % len(texts)] for i in range(batch)])
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        return sess.run(None, {"input_ids": ids, "attention_mask": mask})
    for k in range(len(texts)):
        run(k)
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds or n % len(texts):
        run(n)
        n += 1
    print(batch, (time.perf_counter() - t) / n * 1000)
"""


def raw_onnxruntime(threads=1, seconds=3.0):
    """ms per batch (tokenisation included) of models/minilm_onnx in ONNX Runtime on the sentences of
    benches/minilm_input.json, with `threads` intra-op threads, for batch 1, 8 and 32."""
    out = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", ORT_TIMING, str(ROOT / "benches/minilm_input.json"),
                          str(ROOT / "models/minilm/1/tokenizer.json"), str(ROOT / "models/minilm_onnx/1/model.onnx"),
                          str(threads), str(seconds)],
                         capture_output=True, text=True, check=True).stdout
    return {int(b): float(ms) for b, ms in (line.split() for line in out.splitlines())}


def process_ticks():
    """pid -> (name, user + system clock ticks) of every live process."""
    ticks = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it ended meanwhile
            continue
        fields = text.rsplit(")", 1)[1].split()
        ticks[stat.parent.name] = (text[text.index("(") + 1:text.rindex(")")], int(fields[11]) + int(fields[12]))
    return ticks


def busy_processes(seconds=2.0, share_over=5):
    """Other processes that used more than `share_over` % of a core over the next `seconds`, for the record."""
    before = process_ticks()
    time.sleep(seconds)
    after = process_ticks()
    me = str(os.getpid())
    busy = []
    for pid, (name, ticks) in after.items():
        share = (ticks - before.get(pid, (name, ticks))[1]) / HZ / seconds * 100
        if share > share_over and pid != me:
            busy.append(f"{name} {share:.0f}%")
    return ", ".join(busy) or "none"
