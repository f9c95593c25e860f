#!/usr/bin/env bash
# Benchmarks inferd with Triton's perf_analyzer (KServe V2 over HTTP and gRPC) and writes the figures into
# benches/RESULTS.md, between <!-- bench:perf_analyzer:start --> and <!-- bench:perf_analyzer:end -->
# (other sections of that file are kept).
#
#   scripts/bench.sh [--with-triton]        (or `make bench`; BENCH_TRITON=1 is the same as --with-triton)
#
# Measures, batch 1 per request, perf_analyzer `-p 3000 -r 3 -s 100`:
#   - mlp at concurrency 1, 8, 32, 64 and simple at concurrency 1, 8, over HTTP and gRPC;
#   - server CPU per request (../shared/bench/cpu-per-request.sh) for mlp at c=32 on both protocols;
#   - with --with-triton, the same mlp runs against the reference Triton peer (../shared/bench/peer-triton.sh;
#     its first install takes a few minutes) and the ratio inferd/Triton.
# Raw perf_analyzer output, CSV reports and server logs go to target/bench/.
# Environment: BENCH_PORT_BASE (inferd, default 18100), BENCH_TRITON_PORT_BASE (default 18000),
# BENCH_PA_ARGS (default "-p 3000 -r 3 -s 100"), BENCH_MLP_CONCURRENCY (default "1 8 32 64"),
# BENCH_SIMPLE_CONCURRENCY (default "1 8").
set -euo pipefail

with_triton=${BENCH_TRITON:-0}
for arg in "$@"; do
  case $arg in
    --with-triton) with_triton=1 ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench: unknown argument: $arg (usage: scripts/bench.sh [--with-triton])" >&2; exit 2 ;;
  esac
done

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
shared=$(realpath -m "$root/../shared")
for f in install-perf-analyzer.sh cpu-per-request.sh peer-triton.sh; do
  if [[ ! -x $shared/bench/$f ]]; then
    echo "bench: $shared/bench/$f is missing; the team's shared folder must sit at ../shared beside the repository" >&2
    exit 1
  fi
done

port=${BENCH_PORT_BASE:-18100}
http_port=$port grpc_port=$((port + 1)) metrics_port=$((port + 2))
tport=${BENCH_TRITON_PORT_BASE:-18000}
read -r -a pa_args <<<"${BENCH_PA_ARGS:--p 3000 -r 3 -s 100}"
read -r -a mlp_conc <<<"${BENCH_MLP_CONCURRENCY:-1 8 32 64}"
read -r -a simple_conc <<<"${BENCH_SIMPLE_CONCURRENCY:-1 8}"
out=target/bench
results=benches/RESULTS.md

server_pgid='' peer_pgid=''
cleanup() {
  local rc=$?
  [[ -n $server_pgid ]] && kill -- -"$server_pgid" 2>/dev/null || true
  [[ -n $peer_pgid ]] && kill -- -"$peer_pgid" 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Build and tools.
echo "bench: building release" >&2
cargo build --release --locked --bin inferd
pa=$("$shared/bench/install-perf-analyzer.sh" .perf_analyzer)
export PA_DIR=$root/.perf_analyzer # cpu-per-request.sh installs/uses perf_analyzer there
rm -rf "$out" && mkdir -p "$out"
rows=$out/rows.tsv cpu_rows=$out/cpu.tsv cmds=$out/commands.txt failures=$out/failures.txt
: >"$rows" && : >"$cpu_rows" && : >"$cmds" && : >"$failures"

wait_ready() { # URL PID NAME LOG
  for _ in $(seq 120); do
    curl -sf "$1" >/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "bench: $3 exited during start-up; log: $4" >&2; tail -n 20 "$4" >&2; return 1; }
    sleep 0.5
  done
  echo "bench: $3 not ready after 60 s; log: $4" >&2
  return 1
}

# One perf_analyzer measurement: SYSTEM PROTOCOL HOST:PORT MODEL CONCURRENCY. Appends a row to $rows.
measure() {
  local system=$1 proto=$2 url=$3 model=$4 c=$5
  local tag=$system-$model-$proto-c$c
  local cmd=(perf_analyzer -m "$model" -i "$proto" -u "$url" -b 1 --concurrency-range "$c" "${pa_args[@]}" -f "$out/$tag.csv")
  echo "${cmd[*]}" >>"$cmds"
  echo "bench: $system $model $proto c=$c" >&2
  local rc=0
  timeout 300 "$pa" "${cmd[@]:1}" >"$out/$tag.log" 2>&1 || rc=$?
  if ((rc != 0)) || [[ ! -s $out/$tag.csv ]]; then
    {
      echo "### $tag: exit status $rc"
      echo "\$ ${cmd[*]}"
      tail -n 30 "$out/$tag.log"
      echo
    } >>"$failures"
    echo "bench: FAILED (exit $rc): ${cmd[*]}" >&2
    tail -n 15 "$out/$tag.log" >&2
    printf '%s\t%s\t%s\t%s\tFAILED\n' "$system" "$proto" "$model" "$c" >>"$rows"
    return 0
  fi
  python3 - "$out/$tag.csv" "$system" "$proto" "$model" "$c" >>"$rows" <<'PY'
import csv, sys
path, system, proto, model, c = sys.argv[1:]
with open(path, newline="") as f:
    row = next(csv.DictReader(f))
g = lambda k: float(row.get(k) or 0)
compute = g("Server Compute Input") + g("Server Compute Infer") + g("Server Compute Output")
print("\t".join([system, proto, model, c, f"{g('Inferences/Second'):.0f}", f"{g('p50 latency'):.0f}",
                 f"{g('p99 latency'):.0f}", f"{g('Server Queue'):.0f}", f"{compute:.0f}"]))
PY
}

# Server CPU per request: SYSTEM PROTOCOL SID HTTP_HOSTPORT URL
cpu_measure() {
  local system=$1 proto=$2 sid=$3 http=$4 url=$5 res
  local args=(-i "$proto" -u "$url" -b 1 --concurrency-range 32 "${pa_args[@]}")
  echo "../shared/bench/cpu-per-request.sh \$SID $http mlp ${args[*]}" >>"$cmds"
  echo "bench: $system CPU/request mlp $proto c=32" >&2
  res=$("$shared/bench/cpu-per-request.sh" "$sid" "$http" mlp "${args[@]}" 2>&1 | tail -n 1) || true
  echo "bench:   $res" >&2
  printf '%s\t%s\t%s\n' "$system" "$proto" "$res" >>"$cpu_rows"
}

# 2. inferd.
log=$out/inferd.log
echo "setsid target/release/inferd serve --model-repository models --http-port $http_port --grpc-port $grpc_port --metrics-port $metrics_port" >>"$cmds"
setsid target/release/inferd serve --model-repository models \
  --http-port "$http_port" --grpc-port "$grpc_port" --metrics-port "$metrics_port" >"$log" 2>&1 &
pid=$!
sid=$(ps -o sid= -p "$pid" | tr -d ' ')
if [[ $sid != "$pid" ]]; then
  echo "bench: inferd (pid $pid) is not its own session leader (sid '$sid')" >&2
  kill "$pid" 2>/dev/null || true
  exit 1
fi
server_pgid=$pid
wait_ready "http://127.0.0.1:$http_port/v2/health/ready" "$pid" inferd "$log"
for m in mlp simple; do
  curl -sf "http://127.0.0.1:$http_port/v2/models/$m/ready" >/dev/null ||
    { echo "bench: model $m not ready on inferd; log: $log" >&2; exit 1; }
done

# 3. perf_analyzer against inferd.
for proto in http grpc; do
  if [[ $proto == http ]]; then url=127.0.0.1:$http_port; else url=127.0.0.1:$grpc_port; fi
  for c in "${mlp_conc[@]}"; do measure inferd "$proto" "$url" mlp "$c"; done
  for c in "${simple_conc[@]}"; do measure inferd "$proto" "$url" simple "$c"; done
done

# 4. Server CPU per request.
cpu_measure inferd http "$sid" "127.0.0.1:$http_port" "127.0.0.1:$http_port"
cpu_measure inferd grpc "$sid" "127.0.0.1:$http_port" "127.0.0.1:$grpc_port"
kill -- -"$server_pgid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
server_pgid=''

# 5. The Triton peer.
if ((with_triton)); then
  echo "bench: starting the Triton peer (the first run installs nvidia-pytriton into .peer, a few minutes)" >&2
  echo "../shared/bench/peer-triton.sh .peer --port-base $tport mlp=models/mlp/1/model.onnx" >>"$cmds"
  peer_pgid=$("$shared/bench/peer-triton.sh" .peer --port-base "$tport" mlp=models/mlp/1/model.onnx)
  for proto in http grpc; do
    if [[ $proto == http ]]; then url=127.0.0.1:$tport; else url=127.0.0.1:$((tport + 1)); fi
    for c in "${mlp_conc[@]}"; do measure triton "$proto" "$url" mlp "$c"; done
  done
  cpu_measure triton http "$peer_pgid" "127.0.0.1:$tport" "127.0.0.1:$tport"
  cpu_measure triton grpc "$peer_pgid" "127.0.0.1:$tport" "127.0.0.1:$((tport + 1))"
  kill -- -"$peer_pgid" 2>/dev/null || true
  peer_pgid=''
fi

# 6. benches/RESULTS.md.
commit=$(git rev-parse --short HEAD)
[[ -z $(git status --porcelain --untracked-files=no) ]] || commit="$commit (working tree with uncommitted changes)"
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mkdir -p benches
python3 - "$results" "$rows" "$cpu_rows" "$cmds" "$failures" \
  "$(date -u '+%Y-%m-%d %H:%M UTC')" "$commit" "$(nproc)" "$cpu_model" "${pa_args[*]}" <<'PY'
import re, sys
results, rows_f, cpu_f, cmds_f, fail_f, date, commit, nproc, cpu_model, pa_args = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(rows_f) if l.strip()]
cpu = [l.rstrip("\n").split("\t", 2) for l in open(cpu_f) if l.strip()]
cmds = open(cmds_f).read().strip()
failures = open(fail_f).read().strip()

out = ["## perf_analyzer (KServe V2, batch 1)", "",
       f"- date: {date}", f"- commit: `{commit}`", f"- machine: {nproc} CPUs (`nproc`), {cpu_model}; "
       "client and server share them", f"- perf_analyzer 2.50 (tritonclient 2.50.0 wheel), `{pa_args}`, "
       "one run per concurrency; latencies in µs, server columns from the server's statistics endpoint",
       "- server compute = Server Compute Input + Infer + Output", "",
       "| system | protocol | model | concurrency | infer/s | p50 µs | p99 µs | server queue µs | server compute µs |",
       "|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    if len(r) == 5:
        out.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | FAILED | | | | |")
    else:
        out.append("| " + " | ".join(r) + " |")

out += ["", "### Server CPU per request (mlp, c=32, `../shared/bench/cpu-per-request.sh`)", "",
        "| system | protocol | infer/s | server CPU µs/request | requests counted |", "|---|---|---|---|---|"]
for system, proto, res in cpu:
    m = re.search(r"infer_s=(\S+) server_cpu_us_per_request=(\S+) \(requests=(\S+)\)", res)
    out.append(f"| {system} | {proto} | {m[1]} | {m[2]} | {m[3]} |" if m else f"| {system} | {proto} | FAILED: {res} | | |")

by = {(r[0], r[1], r[2], r[3]): r for r in rows if len(r) > 5}
pairs = [(p, c) for (s, p, m, c) in by if s == "triton" and m == "mlp"]
if pairs:
    out += ["", "### inferd / Triton (mlp)", "",
            "Triton: 2.51 via PyTriton (`../shared/bench/peer-triton.sh`), Python backend + onnxruntime, "
            "dynamic batcher with 100 µs delay, max batch 64.", "",
            "| protocol | concurrency | inferd infer/s | Triton infer/s | throughput ratio | inferd p50 µs | Triton p50 µs | p50 ratio |",
            "|---|---|---|---|---|---|---|---|"]
    for p, c in pairs:
        t, i = by[("triton", p, "mlp", c)], by.get(("inferd", p, "mlp", c))
        if not i:
            continue
        ratio = lambda a, b: f"{float(a) / float(b):.2f}×" if float(b) else "–"
        out.append(f"| {p} | {c} | {i[4]} | {t[4]} | {ratio(i[4], t[4])} | {i[5]} | {t[5]} | {ratio(i[5], t[5])} |")

if failures:
    out += ["", "### Failures", "", "```", failures, "```"]
out += ["", "### Commands", "", "Run by `scripts/bench.sh` (`make bench`; add `--with-triton` for the peer), "
        "`perf_analyzer` = `.perf_analyzer/bin/perf_analyzer`, `$SID` = the server's session id.", "", "```", cmds, "```"]

start, end = "<!-- bench:perf_analyzer:start -->", "<!-- bench:perf_analyzer:end -->"
section = start + "\n" + "\n".join(out) + "\n" + end
try:
    text = open(results).read()
except FileNotFoundError:
    text = "# Benchmark results\n\nSections are rewritten by the scripts named in them; edit outside the markers.\n"
if start in text and end in text:
    text = text[:text.index(start)] + section + text[text.index(end) + len(end):]
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(results, "w").write(text)
PY
echo "bench: wrote $results (raw output in $out/)" >&2
if [[ -s $failures ]]; then
  echo "bench: some perf_analyzer runs failed:" >&2
  cat "$failures" >&2
  exit 1
fi
