#!/usr/bin/env python3
"""Model repositories on S3 (issue 14), against s3s-fs (the S3-compatible server the interop tests use, on
loopback, filled with boto3):

1. Time to ready of the example repository (`models/`: mlp, mlp_autoconf, mlp_candle, simple, simple_string,
   minilm, minilm_onnx), from the start of `target/release/inferd serve` to the first 200 from
   `GET /v2/health/ready`: from local disk, from S3 with an empty cache folder each run (cold), and from S3
   with the cache folder kept between runs (warm, after one priming run). Rounds alternate the three, so a
   drift in the machine's load falls on all alike; medians over the rounds. The S3 requests each run made are
   counted in s3s-fs' own log (RUST_LOG=s3s::ops=debug: one "resolved route, op: <Operation>" line per
   request), the bytes fetched in inferd's ("model 'x' from ...: N file(s) fetched (B bytes)").
2. One poll with 100 models on S3 (100 copies of models/mlp, mlp_000..mlp_099, each config.pbtxt +
   1/model.onnx): inferd in poll mode every second with RUST_LOG=info,inferd::registry=debug, which logs one
   "listed <repo>: N model(s), M file(s) in X ms" line per listing; over `--polls` listings with nothing
   changing: listing time (median, p90), S3 requests per poll (s3s-fs' log), objects fetched and reloads (none
   expected), and the CPU time of inferd (utime+stime from /proc/<pid>/stat) and of s3s-fs per poll. Beside it,
   the same 100 models from a local folder in poll mode every second, idle for as long: its CPU per second.

    .venv/bin/python scripts/bench_registry.py [--runs 5] [--polls 30] [--record]

Needs the release binary (`make build`), MiniLM in models/ (`make setup`) and s3s-fs in .deps
(scripts/setup_registry.sh, which `make test` runs). The binary is copied once at the start, so that a rebuild
meanwhile does not mix two builds in one run. Work files go to a temporary folder (removed at the end, but for
the logs; `--keep` keeps everything). With --record, writes benches/RESULTS.md between
<!-- bench:registry:start --> and <!-- bench:registry:end -->.
"""
import argparse
import concurrent.futures
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from perf_common import HZ, ROOT, busy_processes, cpu_ticks, replace_section

sys.path.insert(0, str(ROOT / "tests" / "interop"))
from conftest import _free_ports  # noqa: E402
from stores import S3S_FS, S3Store, credentials  # noqa: E402

MODELS = ROOT / "models"
EXAMPLE = ["mlp", "mlp_autoconf", "mlp_candle", "simple", "simple_string", "minilm", "minilm_onnx"]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
LISTED = re.compile(r"listed (\S+): (\d+) model\(s\), (\d+) file\(s\) in ([0-9.]+) ms")
FETCHED = re.compile(r"model '([^']+)' from \S+: (\d+) file\(s\) fetched \((\d+) bytes\)")
S3_OP = re.compile(r"resolved route, op: (\w+)")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Tail:
    """What a log file gained since the last read."""

    def __init__(self, path):
        self.path = Path(path)
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def read(self):
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        return ANSI.sub("", data.decode(errors="replace"))


def s3_ops(text):
    ops = {}
    for op in S3_OP.findall(text):
        ops[op] = ops.get(op, 0) + 1
    return ops


def ready(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def ready_models(port):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/repository/index", data=b"{}",
                                 headers={"Content-Type": "application/json"})
    import json
    with urllib.request.urlopen(req, timeout=10) as r:
        return sorted(e["name"] for e in json.load(r) if e.get("state") == "READY")


class Server:
    """One inferd, timed from its start until ready."""

    def __init__(self, binary, repository, cache, log_path, extra=(), env=None):
        self.http, grpc, metrics = _free_ports(3)
        self.cmd = [str(binary), "serve", "--model-repository", str(repository), "--model-cache-dir", str(cache),
                    "--http-port", str(self.http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
                    *extra]
        self.log_path = log_path
        out = open(log_path, "wb")
        t0 = time.monotonic()
        self.process = subprocess.Popen(self.cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                        env=dict(os.environ, NO_COLOR="1", **(env or {})))
        out.close()
        while not ready(self.http):
            if self.process.poll() is not None:
                sys.exit(f"inferd exited with {self.process.returncode} before ready; see {log_path}")
            if time.monotonic() - t0 > 180:
                self.stop()
                sys.exit(f"inferd not ready after 180 s; see {log_path}")
            time.sleep(0.01)
        self.ready_s = time.monotonic() - t0

    def log(self):
        return ANSI.sub("", Path(self.log_path).read_text(errors="replace"))

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def p90(values):
    """Nearest-rank 90th percentile."""
    s = sorted(values)
    return s[max(math.ceil(0.9 * len(s)) - 1, 0)]


def upload_all(store, bucket, jobs):
    """Uploads (key, local file or bytes) pairs, four at a time."""
    client = store.client()  # boto3 clients may be shared between threads

    def one(job):
        key, body = job
        if isinstance(body, bytes):
            client.put_object(Bucket=bucket, Key=key, Body=body)
        else:
            client.upload_file(str(body), bucket, key)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(one, jobs))


def mlp_copy(i):
    """The config and model file of the i-th copy of models/mlp, named mlp_NNN (a config names its folder)."""
    name = f"mlp_{i:03d}"
    config = (MODELS / "mlp" / "config.pbtxt").read_text().replace('name: "mlp"', f'name: "{name}"', 1)
    return name, config.encode(), MODELS / "mlp" / "1" / "model.onnx"


def shown(cmd, subst):
    text = " ".join(cmd)
    for old, new in subst:
        text = text.replace(old, new)
    return re.sub(r"--(http|grpc|metrics)-port \d+", lambda m: f"--{m.group(1)}-port {m.group(1).upper()}", text)


def git_commit():
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return head.strip() + (" with uncommitted changes" if dirty else "")


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="rounds of time-to-ready (local, S3 cold, S3 warm)")
    ap.add_argument("--polls", type=int, default=30, help="listings measured with 100 models")
    ap.add_argument("--models", type=int, default=100, help="copies of models/mlp in the poll test")
    ap.add_argument("--no-local-poll", action="store_true", help="skip the local-folder idle comparison")
    ap.add_argument("--record", action="store_true", help="write the section of benches/RESULTS.md")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (store data, caches, logs)")
    a = ap.parse_args()

    binary_src = ROOT / "target/release/inferd"
    if not binary_src.is_file():
        sys.exit(f"{binary_src} not found: `make build` first")
    for m in EXAMPLE:
        if not (MODELS / m).is_dir():
            sys.exit(f"models/{m} missing")
    for f in ("minilm/1/model.safetensors", "minilm_onnx/1/model.onnx"):
        if not (MODELS / f).is_file():
            sys.exit(f"models/{f} missing: run `make setup`")
    if not S3S_FS.exists():
        sys.exit(f"{S3S_FS} missing: run scripts/setup_registry.sh")

    t_script = time.monotonic()
    started_at = time.gmtime()
    commit = git_commit()
    load_before = uptime()
    busy_before = busy_processes(share_over=20)
    log(f"load at start: {load_before}; busy: {busy_before}")
    work = Path(tempfile.mkdtemp(prefix="inferd-bench-registry-"))
    logs = work / "logs"
    logs.mkdir()
    binary = work / "inferd"
    shutil.copy2(binary_src, binary)
    binary_mtime = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(binary_src.stat().st_mtime))
    log(f"work folder {work}; binary {binary_src} built {binary_mtime}")

    # S3Store starts s3s-fs with this process' environment; at debug, s3s::ops logs one "resolved route" line
    # per request. inferd gets its own RUST_LOG.
    os.environ["RUST_LOG"] = "s3s::ops=debug"
    store = S3Store(work / "s3")
    del os.environ["RUST_LOG"]
    s3_log = work / "s3.log"
    env = credentials()
    servers = []
    try:
        # ---------------------------------------------------------------- time to ready
        bucket = store.bucket("examples")
        files = [(f"models/{m}/{f.relative_to(MODELS / m).as_posix()}", f)
                 for m in EXAMPLE for f in sorted((MODELS / m).rglob("*")) if f.is_file()]
        repo_bytes = sum(f.stat().st_size for _, f in files)
        t = time.monotonic()
        upload_all(store, bucket, files)
        log(f"uploaded {len(files)} files, {repo_bytes} bytes, in {time.monotonic() - t:.1f} s")
        s3_url = store.url(bucket, "models")
        warm_cache = work / "cache-warm"
        cmds = {}

        def run(kind, tag):
            if kind == "local":
                repo, cache = "models", work / "cache-local"
            elif kind == "cold":
                repo, cache = s3_url, work / f"cache-cold-{tag}"
            else:
                repo, cache = s3_url, warm_cache
            tail = Tail(s3_log)
            s = Server(binary, repo, cache, logs / f"{kind}-{tag}.log", env=env)
            servers.append(s)
            names = ready_models(s.http)
            s.stop()
            if names != sorted(EXAMPLE):
                sys.exit(f"{kind} {tag}: ready with {names}; see {s.log_path}")
            fetched = [(int(n), int(b)) for _, n, b in FETCHED.findall(s.log())]
            ops = s3_ops(tail.read()) if kind != "local" else {}
            if kind == "cold":
                shutil.rmtree(cache)
            cmds[kind] = s.cmd
            result = dict(ready=s.ready_s, files=sum(n for n, _ in fetched), bytes=sum(b for _, b in fetched),
                          ops=ops)
            log(f"{kind} {tag}: ready in {s.ready_s:.3f} s; fetched {result['files']} files, {result['bytes']} "
                f"bytes; S3 requests {ops}")
            return result

        prime = run("warm", "prime")
        results = {"local": [], "cold": [], "warm": []}
        for r in range(a.runs):
            order = ["local", "cold", "warm"]
            order = order[r % 3:] + order[:r % 3]  # each kind first in turn
            for kind in order:
                results[kind].append(run(kind, str(r)))

        # ---------------------------------------------------------------- one poll with 100 models
        pbucket = store.bucket("poll100")
        jobs, local_repo = [], work / "local100"
        for i in range(a.models):
            name, config, onnx = mlp_copy(i)
            jobs += [(f"{name}/config.pbtxt", config), (f"{name}/1/model.onnx", onnx)]
            (local_repo / name / "1").mkdir(parents=True)
            (local_repo / name / "config.pbtxt").write_bytes(config)
            shutil.copyfile(onnx, local_repo / name / "1" / "model.onnx")
        t = time.monotonic()
        upload_all(store, pbucket, jobs)
        log(f"uploaded {len(jobs)} objects for {a.models} models in {time.monotonic() - t:.1f} s")
        poll_url = store.url(pbucket)
        poll_args = ["--model-control-mode", "poll", "--repository-poll-secs", "1"]
        poll_env = dict(env, RUST_LOG="info,inferd::registry=debug")
        start_tail = Tail(s3_log)
        s = Server(binary, poll_url, work / "cache-poll", logs / "poll-s3.log", poll_args, poll_env)
        servers.append(s)
        n_ready = len(ready_models(s.http))
        if n_ready != a.models:
            sys.exit(f"poll: {n_ready} models ready of {a.models}; see {s.log_path}")
        start_ops = s3_ops(start_tail.read())
        log(f"poll server ready with {a.models} models in {s.ready_s:.2f} s; S3 requests at start {start_ops}")
        inferd_tail = Tail(s.log_path)

        def next_listings(n, timeout):
            """Waits for n more listing lines; returns them and the text read meanwhile."""
            got, text = [], ""
            deadline = time.monotonic() + timeout
            while len(got) < n:
                if time.monotonic() > deadline:
                    sys.exit(f"poll: {len(got)} listings of {n} in {timeout} s; see {s.log_path}")
                time.sleep(0.02)
                chunk = inferd_tail.read()
                text += chunk
                got += LISTED.findall(chunk)
            return got, text

        next_listings(1, 10)  # the measured span starts at a listing just logged
        s3_tail, cpu0, store_cpu0, t0 = Tail(s3_log), cpu_ticks(s.process.pid), cpu_ticks(store.process.pid), \
            time.monotonic()
        listings, text = next_listings(a.polls, a.polls * 3 + 10)
        cpu1, store_cpu1, t1 = cpu_ticks(s.process.pid), cpu_ticks(store.process.pid), time.monotonic()
        poll_ops = s3_ops(s3_tail.read())
        listings = listings[:a.polls]
        span = t1 - t0
        s.stop()
        ms = [float(x) for *_, x in listings]
        counts = {(int(nm), int(nf)) for _, nm, nf, _ in listings}
        changed = len(re.findall(r"model files changed", text))
        fetched_after = len(FETCHED.findall(text))
        poll = dict(
            ready=s.ready_s, start_ops=start_ops, counts=counts, median=statistics.median(ms), p90=p90(ms),
            min=min(ms), max=max(ms), ops=poll_ops, per_poll=sum(poll_ops.values()) / a.polls, span=span,
            cpu_ms_per_poll=(cpu1 - cpu0) / HZ * 1e3 / a.polls, cpu_ticks=cpu1 - cpu0,
            store_cpu_ms_per_poll=(store_cpu1 - store_cpu0) / HZ * 1e3 / a.polls,
            changed=changed, fetched_after=fetched_after, gets_after=poll_ops.get("GetObject", 0),
        )
        log(f"poll: {poll}")
        poll_cmd = s.cmd

        local = None
        if not a.no_local_poll:
            s = Server(binary, local_repo, work / "cache-local", logs / "poll-local.log", poll_args,
                       {"RUST_LOG": "info"})
            servers.append(s)
            n_ready = len(ready_models(s.http))
            if n_ready != a.models:
                sys.exit(f"local poll: {n_ready} models ready of {a.models}; see {s.log_path}")
            time.sleep(3.0)  # past the start, as the S3 span starts past its first listings
            tail = Tail(s.log_path)
            c0, l0 = cpu_ticks(s.process.pid), time.monotonic()
            time.sleep(span)
            c1, l1 = cpu_ticks(s.process.pid), time.monotonic()
            local_text = tail.read()
            s.stop()
            local = dict(ready=s.ready_s, span=l1 - l0, cpu_ticks=c1 - c0,
                         cpu_ms_per_s=(c1 - c0) / HZ * 1e3 / (l1 - l0),
                         changed=len(re.findall(r"model files changed", local_text)))
            log(f"local poll: {local}")
            local_cmd = s.cmd
    finally:
        for s in servers:
            s.stop()
        store.stop()
        if not a.keep:
            for p in work.iterdir():
                if p.name not in ("logs", "s3.log"):
                    shutil.rmtree(p) if p.is_dir() else p.unlink()
    load_after = uptime()
    busy_after = busy_processes(share_over=20)
    log(f"load at end: {load_after}; whole run {time.monotonic() - t_script:.0f} s; logs in {work}")

    # ---------------------------------------------------------------- report
    med = {k: statistics.median(r["ready"] for r in v) for k, v in results.items()}
    mb = repo_bytes / 1e6
    subst = [(str(binary), "target/release/inferd"), (str(work / "cache-warm"), "$WARM_CACHE"),
             (str(work / "cache-local"), "$CACHE"), (str(work / "cache-poll"), "$CACHE"),
             (str(local_repo), "$LOCAL100"), (str(ROOT) + "/", "")]
    for r in range(a.runs):
        subst.append((str(work / f"cache-cold-{r}"), "$EMPTY_CACHE"))
    port = str(store.port)
    subst.append((f"127.0.0.1:{port}", "127.0.0.1:$S3_PORT"))

    def fmt_ops(ops):
        return ", ".join(f"{n} {op}" for op, n in sorted(ops.items())) or "none"

    def runs(kind):
        return ", ".join(f"{r['ready']:.2f}" for r in results[kind])

    def same(kind, key, fmt=str):
        """The value every run of `kind` had, or each run's when they differ."""
        values = [fmt(r[key]) for r in results[kind]]
        return values[0] if len(set(values)) == 1 else " / ".join(values)

    def row(kind):
        return (f"{same(kind, 'files')} | {same(kind, 'bytes', lambda b: f'{b:,}')} | "
                f"{same(kind, 'ops', fmt_ops)} |")

    lines = [
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', started_at)} at `{commit}` (release binary built "
        f"{binary_mtime}) by `.venv/bin/python scripts/bench_registry.py --runs {a.runs} --polls {a.polls}"
        f"{' --record' if a.record else ''}`. 2 cores, shared: `uptime` {load_before.split('load average:')[-1].strip()}"
        f" at the start, {load_after.split('load average:')[-1].strip()} at the end; other busy processes (`ps` %CPU) "
        f"{busy_before} at the start, {busy_after} at the end. S3: s3s-fs "
        f"{(S3S_FS.parent.parent / '.version').read_text().strip() if (S3S_FS.parent.parent / '.version').exists() else ''}"
        f" (`.deps/s3s/bin/s3s-fs`, started by `tests/interop/stores.py`'s `S3Store`) on loopback, its objects on the "
        f"same disk (in the page cache), filled with boto3; it logs one line per request (RUST_LOG=s3s::ops=debug), "
        f"which gives the request counts.",
        "",
        f"### Time to ready, example repository (`models/`: {len(EXAMPLE)} models, {len(files)} files, "
        f"{repo_bytes:,} bytes = {mb:.1f} MB)",
        "",
        f"From the start of the process to the first 200 from `GET /v2/health/ready` (polled every 10 ms), every "
        f"model READY in the repository index; {a.runs} rounds, each running the three in turn (the order rotating), "
        f"after one priming run that filled the warm cache.",
        "",
        "| repository | median s | runs (s) | files fetched | bytes fetched | S3 requests per start |",
        "|---|---|---|---|---|---|",
        f"| local disk (`models`) | {med['local']:.2f} | {runs('local')} | — | — | — |",
        f"| S3, cold (empty `--model-cache-dir`) | {med['cold']:.2f} | {runs('cold')} | {row('cold')}",
        f"| S3, warm (cache kept) | {med['warm']:.2f} | {runs('warm')} | {row('warm')}",
        "",
        f"- cold: {mb / med['cold']:.0f} MB/s effective ({mb:.1f} MB / {med['cold']:.2f} s, start to ready); the "
        f"download and cache write alone (cold − warm, {med['cold'] - med['warm']:.2f} s) come to "
        f"{mb / max(med['cold'] - med['warm'], 1e-9):.0f} MB/s. Every file is written to a temporary name, "
        f"fsynced and renamed into the cache.",
        f"- warm: {med['warm'] - med['local']:+.2f} s against local disk (one listing, then the cached copies); "
        f"cold {med['cold'] - med['local']:+.2f} s.",
        f"- the priming run (cold too) took {prime['ready']:.2f} s.",
        "",
        f"### One poll with {a.models} models on S3",
        "",
        f"{a.models} copies of `models/mlp` (`mlp_000`..`mlp_{a.models - 1:03d}`, each `config.pbtxt` + "
        f"`1/model.onnx`, {2 * a.models} objects); inferd in poll mode every second, ready in {poll['ready']:.1f} s "
        f"(start: {fmt_ops(poll['start_ops'])}); then {a.polls} listings in a row with nothing changing "
        f"({poll['span']:.1f} s), each logged as "
        f"\"listed ...: {', '.join(f'{c} model(s), {f} file(s)' for c, f in sorted(poll['counts']))} in X ms\".",
        "",
        "| listing median ms | p90 ms | min / max ms | S3 requests per poll | objects fetched | reloads | inferd CPU ms per poll | s3s-fs CPU ms per poll |",
        "|---|---|---|---|---|---|---|---|",
        f"| {poll['median']:.2f} | {poll['p90']:.2f} | {poll['min']:.2f} / {poll['max']:.2f} | "
        f"{poll['per_poll']:g} ({fmt_ops(poll['ops'])} in {a.polls} polls) | {poll['gets_after']} | "
        f"{poll['changed']} | {poll['cpu_ms_per_poll']:.2f} | {poll['store_cpu_ms_per_poll']:.2f} |",
        "",
        f"- requests: object_store lists with ListObjectsV2, up to 1000 keys a page, so {2 * a.models} objects "
        f"should be one request a poll; s3s-fs' log counted {fmt_ops(poll['ops'])} over the {a.polls} polls. "
        f"While nothing changed: {poll['gets_after']} GetObject, {poll['changed']} 'model files changed' lines and "
        f"{poll['fetched_after']} 'fetched' lines in inferd's log.",
        f"- CPU: utime+stime of the whole inferd process (`/proc/<pid>/stat`, {HZ} ticks/s) over the {a.polls} "
        f"polls ({poll['cpu_ticks']} ticks), so it includes everything the idle server does besides listing; "
        f"s3s-fs' likewise. The listing time is mostly s3s-fs answering (it reads its folder of objects on each "
        f"ListObjectsV2); against a remote S3 it is a round trip plus the store's own time.",
    ]
    if local:
        per_s_s3 = poll["cpu_ticks"] / HZ * 1e3 / poll["span"]
        lines.append(
            f"- the same {a.models} models from a local folder, poll mode every second, idle for {local['span']:.1f} s: "
            f"{local['cpu_ms_per_s']:.2f} ms CPU per second ({local['cpu_ticks']} ticks; {local['changed']} reloads), "
            f"against {per_s_s3:.2f} ms per second from S3.")
    lines += [
        "",
        "### Commands",
        "",
        "```",
        f".venv/bin/python scripts/bench_registry.py --runs {a.runs} --polls {a.polls}"
        f"{' --record' if a.record else ''}",
        "# local disk",
        shown(cmds["local"], subst),
        "# S3 cold ($EMPTY_CACHE a new empty folder each run) and warm ($WARM_CACHE kept), with "
        "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION from stores.credentials()",
        shown(cmds["cold"], subst),
        shown(cmds["warm"], subst),
        f"# {a.models} models on S3, RUST_LOG=info,inferd::registry=debug",
        shown(poll_cmd, subst),
    ]
    if local:
        lines += ["# the same models from a local folder", shown(local_cmd, subst)]
    lines += ["```"]
    block = "\n".join(lines)
    print(block)
    if a.record:
        replace_section("registry", "Model repositories on S3 (issue 14)", block)
        log("recorded in benches/RESULTS.md")


if __name__ == "__main__":
    main()
