#!/usr/bin/env bash
# Benchmarks inferd with Triton's perf_analyzer (KServe V2 over HTTP and gRPC) and writes the figures into
# benches/RESULTS.md, between <!-- bench:perf_analyzer:start --> and <!-- bench:perf_analyzer:end -->
# (other sections of that file are kept).
#
#   scripts/bench.sh [--with-triton]        (or `make bench`; BENCH_TRITON=1 is the same as --with-triton)
#
# Measures, batch 1 per request:
#   - mlp at concurrency 1, 8, 32, 64, identity (the built-in identity backend, FP32 [64]: serving alone) at
#     1, 32 and simple at 1, 8, over HTTP and gRPC;
#   - server CPU per request (scripts/cpu_per_request.sh) for mlp and identity at c=32 on both protocols;
#   - with --with-triton, the same mlp and identity runs against the reference Triton peer
#     (scripts/peer_triton.sh, identity as identity:FP32:64; its first install takes a few minutes) and the
#     ratio inferd/Triton.
# Everything it needs is in the repository: perf_analyzer is installed by scripts/install_perf_analyzer.sh.
# How perf_analyzer is run (BENCH_PA_MODE):
#   count (default): a 1000-request probe (warm-up, and sizes the run), then one run of --request-count N
#     with N = about BENCH_SECONDS (4) of load. Throughput = N / (last response - first send) taken from
#     --profile-export-file, because perf_analyzer 2.50 divides N by a whole number of seconds in this mode.
#     perf_analyzer 2.50 now and then never ends such a run (the server has answered all N requests); each
#     run is killed after BENCH_PA_TIMEOUT (60) seconds and tried up to three times.
#   windows: `-p 3000 -r 3 -s 100` (BENCH_PA_WINDOW_ARGS), perf_analyzer's stability windows. perf_analyzer 2.50
#     can then spend minutes in InferenceProfiler::ValidLatencyMeasurement (it erases request records one
#     by one, so its cost grows as the square of the request rate) once a server answers ~15k+ requests/s
#     with c>=32 on 2 cores; each run is cut at BENCH_PA_TIMEOUT (180) seconds and reported as failed.
# Raw perf_analyzer output, CSV reports and server logs go to target/bench/.
# Environment: BENCH_PORT_BASE (inferd, default 18100), BENCH_TRITON_PORT_BASE (default 18000),
# BENCH_MLP_CONCURRENCY (default "1 8 32 64"), BENCH_IDENTITY_CONCURRENCY (default "1 32"),
# BENCH_SIMPLE_CONCURRENCY (default "1 8"), BENCH_CPU_SECONDS (8).
set -euo pipefail
set +m # no job control: `setsid` must not fork, so that $! is the server's session id

with_triton=${BENCH_TRITON:-0}
for arg in "$@"; do
  case $arg in
    --with-triton) with_triton=1 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "bench: unknown argument: $arg (usage: scripts/bench.sh [--with-triton])" >&2; exit 2 ;;
  esac
done

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"

port=${BENCH_PORT_BASE:-18100}
http_port=$port grpc_port=$((port + 1)) metrics_port=$((port + 2))
tport=${BENCH_TRITON_PORT_BASE:-18000}
mode=${BENCH_PA_MODE:-count}
[[ $mode == count || $mode == windows ]] || { echo "bench: BENCH_PA_MODE must be count or windows" >&2; exit 2; }
read -r -a window_args <<<"${BENCH_PA_WINDOW_ARGS:--p 3000 -r 3 -s 100}"
secs=${BENCH_SECONDS:-4} cpu_secs=${BENCH_CPU_SECONDS:-8} probe=${BENCH_PROBE_REQUESTS:-1000}
min_requests=2000 max_requests=${BENCH_MAX_REQUESTS:-100000}
pa_timeout=${BENCH_PA_TIMEOUT:-$([[ $mode == windows ]] && echo 180 || echo 60)}
read -r -a mlp_conc <<<"${BENCH_MLP_CONCURRENCY:-1 8 32 64}"
read -r -a identity_conc <<<"${BENCH_IDENTITY_CONCURRENCY:-1 32}"
read -r -a simple_conc <<<"${BENCH_SIMPLE_CONCURRENCY:-1 8}"
out=target/bench
results=benches/RESULTS.md

server_pgid='' peer_pgid=''
cleanup() {
  local rc=$?
  if [[ -n $server_pgid ]]; then kill -- -"$server_pgid" 2>/dev/null || true; fi
  if [[ -n $peer_pgid ]]; then kill -- -"$peer_pgid" 2>/dev/null || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. Build and tools.
echo "bench: building release" >&2
cargo build --release --locked --bin inferd
pa=$(scripts/install_perf_analyzer.sh .perf_analyzer)
export PA_DIR=$root/.perf_analyzer # where cpu_per_request.sh finds it
rm -rf "$out" && mkdir -p "$out"
rows=$out/rows.tsv cpu_rows=$out/cpu.tsv cmds=$out/commands.txt failures=$out/failures.txt retries=$out/retries.txt
: >"$rows" && : >"$cpu_rows" && : >"$cmds" && : >"$failures" && : >"$retries"

wait_ready() { # URL PID NAME LOG
  for _ in $(seq 120); do
    curl -sf "$1" >/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { echo "bench: $3 exited during start-up; log: $4" >&2; tail -n 20 "$4" >&2; return 1; }
    sleep 0.5
  done
  echo "bench: $3 not ready after 60 s; log: $4" >&2
  return 1
}

# Seconds spanned by the requests in a perf_analyzer profile export (first send to last response), as
# "RATE COUNT SECONDS". A regex scan: the export also holds every input and output and runs to 100+ MB.
export_rate() {
  python3 - "$1" <<'PY'
import re, sys
text = open(sys.argv[1], "rb").read()
starts = [int(m) for m in re.findall(rb'"timestamp":(\d+)', text)]
ends = [int(m.split(b",")[-1]) for m in re.findall(rb'"response_timestamps":\[([0-9,]+)\]', text)]
span = (max(ends) - min(starts)) / 1e9
print(f"{len(ends) / span:.1f} {len(ends)} {span:.3f}")
PY
}

# perf_analyzer 2.50 now and then never finishes a --request-count run although the server answered all N
# requests (its count of collected records stays below N), and SIGTERM does not end it then. Run it under
# timeout -k, up to three times. pa_run LOG CLEANUP_FILES... -- ARGS...
pa_run() {
  local log=$1 rc=0 try files=(); shift
  while [[ $1 != -- ]]; do files+=("$1"); shift; done; shift
  for try in 1 2 3; do
    rm -f "${files[@]}"
    rc=0
    timeout -k 5 "$pa_timeout" "$pa" "$@" >"$log" 2>&1 || rc=$?
    ((rc == 0)) && return 0
    echo "bench:   perf_analyzer exit $rc (try $try of 3)$( ((rc == 124 || rc == 137)) && echo ", hung; killed after $pa_timeout s")" >&2
    echo "$*: exit $rc on try $try" >>"$retries"
  done
  return "$rc"
}

declare -A rate_of # tag -> measured infer/s, to size the CPU runs
# One perf_analyzer measurement: SYSTEM PROTOCOL HOST:PORT MODEL CONCURRENCY. Appends a row to $rows.
measure() {
  local system=$1 proto=$2 url=$3 model=$4 c=$5
  local tag=$system-$model-$proto-c$c rc=0 n rate span
  local base=(-m "$model" -i "$proto" -u "$url" -b 1 --concurrency-range "$c")
  local cmd
  echo "bench: $system $model $proto c=$c" >&2
  if [[ $mode == windows ]]; then
    cmd=(perf_analyzer "${base[@]}" "${window_args[@]}" -f "$out/$tag.csv")
    echo "${cmd[*]}" >>"$cmds"
    pa_run "$out/$tag.log" "$out/$tag.csv" -- "${cmd[@]:1}" || rc=$?
  else
    # Probe (also the warm-up) to size the run to about $secs seconds, then the measured run.
    pa_run "$out/$tag.probe.log" "$out/$tag.probe.json" -- "${base[@]}" --request-count "$probe" \
      --profile-export-file "$out/$tag.probe.json" || rc=$?
    if ((rc == 0)); then
      read -r rate _ span < <(export_rate "$out/$tag.probe.json")
      # A short probe underestimates fast servers (connection set-up); run again, once, when the measured
      # run came out under half the intended length.
      for _ in 1 2; do
        n=$(python3 -c "print(max($min_requests, min($max_requests, int($rate * $secs))))")
        cmd=(perf_analyzer "${base[@]}" --request-count "$n" -f "$out/$tag.csv" --profile-export-file "$out/$tag.json")
        # (pa_run removes the old CSV and export first: perf_analyzer refuses an existing export file)
        pa_run "$out/$tag.log" "$out/$tag.csv" "$out/$tag.json" -- "${cmd[@]:1}" || rc=$?
        ((rc == 0)) || break
        read -r rate _ span < <(export_rate "$out/$tag.json")
        python3 -c "import sys; sys.exit(not ($span < $secs / 2 and $n < $max_requests))" || break
        echo "bench:   $n requests took only $span s; again with more" >&2
      done
      echo "${cmd[*]}" >>"$cmds"
    else
      cmd=(perf_analyzer "${base[@]}" --request-count "$probe" --profile-export-file "$out/$tag.probe.json")
      cp "$out/$tag.probe.log" "$out/$tag.log"
    fi
  fi
  if ((rc != 0)) || [[ ! -s $out/$tag.csv ]]; then
    {
      echo "### $tag: exit status $rc$( ((rc == 124)) && echo " (timed out after $pa_timeout s)")"
      echo "\$ ${cmd[*]}"
      if (($(wc -l <"$out/$tag.log") > 30)); then head -n 5 "$out/$tag.log"; echo "[...]"; fi
      tail -n 25 "$out/$tag.log"
      echo
    } >>"$failures"
    echo "bench: FAILED (exit $rc): ${cmd[*]}" >&2
    head -n 15 "$out/$tag.log" >&2
    printf '%s\t%s\t%s\t%s\tFAILED\n' "$system" "$proto" "$model" "$c" >>"$rows"
    rm -f "$out/$tag".*json
    return 0
  fi
  if [[ $mode == windows ]]; then
    rate=$(python3 -c "import csv,sys; print(next(csv.DictReader(open(sys.argv[1])))['Inferences/Second'])" "$out/$tag.csv")
  else
    local count
    read -r rate count span < <(export_rate "$out/$tag.json")
    echo "bench:   $count requests in $span s" >&2
    rm -f "$out/$tag".*json
  fi
  rate_of[$tag]=$rate
  python3 - "$out/$tag.csv" "$system" "$proto" "$model" "$c" "$rate" >>"$rows" <<'PY'
import csv, sys
path, system, proto, model, c, rate = sys.argv[1:]
with open(path, newline="") as f:
    row = next(csv.DictReader(f))
g = lambda k: float(row.get(k) or 0)
compute = g("Server Compute Input") + g("Server Compute Infer") + g("Server Compute Output")
print("\t".join([system, proto, model, c, f"{float(rate):.0f}", f"{g('p50 latency'):.0f}",
                 f"{g('p99 latency'):.0f}", f"{g('Server Queue'):.0f}", f"{compute:.0f}"]))
PY
}

# Server CPU per request at c=32: SYSTEM MODEL PROTOCOL SID HTTP_HOSTPORT URL
cpu_measure() {
  local system=$1 model=$2 proto=$3 sid=$4 http=$5 url=$6 res n
  local args=(-i "$proto" -u "$url" -b 1 --concurrency-range 32)
  if [[ $mode == windows ]]; then
    args+=("${window_args[@]}")
  else
    n=$(python3 -c "print(max($min_requests, min(4 * $max_requests, int(${rate_of[$system-$model-$proto-c32]:-1000} * $cpu_secs))))")
    args+=(--request-count "$n")
  fi
  echo "scripts/cpu_per_request.sh \$SID $http $model ${args[*]}" >>"$cmds"
  echo "bench: $system CPU/request $model $proto c=32" >&2
  # Its perf_analyzer may hang after the last request (see pa_run): cpu_per_request.sh kills it after
  # CPU_PA_TIMEOUT seconds; the CPU and request counts stay valid.
  local log=$out/cpu-$system-$model-$proto.log
  CPU_PA_TIMEOUT=$pa_timeout scripts/cpu_per_request.sh "$sid" "$http" "$model" "${args[@]}" >"$log" 2>&1 || true
  grep -q 'did not end' "$log" && echo "cpu_per_request.sh $system $model $proto: perf_analyzer killed after $pa_timeout s" >>"$retries"
  res=$(tail -n 1 "$log")
  echo "bench:   $res" >&2
  printf '%s\t%s\t%s\t%s\n' "$system" "$model" "$proto" "$res" >>"$cpu_rows"
}

# 2. inferd.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$http_port" "$grpc_port" "$metrics_port"; do
  if port_busy "$p"; then echo "bench: port $p is already in use (another server running?)" >&2; exit 1; fi
done
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
for m in mlp identity simple; do
  curl -sf "http://127.0.0.1:$http_port/v2/models/$m/ready" >/dev/null ||
    { echo "bench: model $m not ready on inferd; log: $log" >&2; exit 1; }
done

# 3. perf_analyzer against inferd.
for proto in http grpc; do
  if [[ $proto == http ]]; then url=127.0.0.1:$http_port; else url=127.0.0.1:$grpc_port; fi
  for c in "${mlp_conc[@]}"; do measure inferd "$proto" "$url" mlp "$c"; done
  for c in "${identity_conc[@]}"; do measure inferd "$proto" "$url" identity "$c"; done
  for c in "${simple_conc[@]}"; do measure inferd "$proto" "$url" simple "$c"; done
done

# 4. Server CPU per request.
for m in mlp identity; do
  cpu_measure inferd "$m" http "$sid" "127.0.0.1:$http_port" "127.0.0.1:$http_port"
  cpu_measure inferd "$m" grpc "$sid" "127.0.0.1:$http_port" "127.0.0.1:$grpc_port"
done
kill -- -"$server_pgid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
server_pgid=''

# 5. The Triton peer.
if ((with_triton)); then
  echo "bench: starting the Triton peer (the first run installs nvidia-pytriton into .peer, a few minutes)" >&2
  peer_models=(mlp=models/mlp/1/model.onnx identity=identity:FP32:64)
  echo "scripts/peer_triton.sh .peer --port-base $tport ${peer_models[*]}" >>"$cmds"
  for p in "$tport" "$((tport + 1))" "$((tport + 2))"; do
    if port_busy "$p"; then echo "bench: port $p is already in use (another server running?)" >&2; exit 1; fi
  done
  peer_pgid=$(scripts/peer_triton.sh .peer --port-base "$tport" "${peer_models[@]}")
  for proto in http grpc; do
    if [[ $proto == http ]]; then url=127.0.0.1:$tport; else url=127.0.0.1:$((tport + 1)); fi
    for c in "${mlp_conc[@]}"; do measure triton "$proto" "$url" mlp "$c"; done
    for c in "${identity_conc[@]}"; do measure triton "$proto" "$url" identity "$c"; done
  done
  for m in mlp identity; do
    cpu_measure triton "$m" http "$peer_pgid" "127.0.0.1:$tport" "127.0.0.1:$tport"
    cpu_measure triton "$m" grpc "$peer_pgid" "127.0.0.1:$tport" "127.0.0.1:$((tport + 1))"
  done
  kill -- -"$peer_pgid" 2>/dev/null || true
  peer_pgid=''
fi

# 6. benches/RESULTS.md.
commit=$(git rev-parse --short HEAD)
[[ -z $(git status --porcelain --untracked-files=no) ]] || commit="$commit (working tree with uncommitted changes)"
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mkdir -p benches
python3 - "$results" "$rows" "$cpu_rows" "$cmds" "$failures" "$retries" \
  "$(date -u '+%Y-%m-%d %H:%M UTC')" "$commit" "$(nproc)" "$cpu_model" "$mode" "${window_args[*]}" "$secs" <<'PY'
import re, sys
results, rows_f, cpu_f, cmds_f, fail_f, retries_f, date, commit, nproc, cpu_model, mode, window_args, secs = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(rows_f) if l.strip()]
cpu = [l.rstrip("\n").split("\t", 3) for l in open(cpu_f) if l.strip()]
cmds = open(cmds_f).read().strip()
failures = open(fail_f).read().strip()
retries = open(retries_f).read().strip()

out = ["## perf_analyzer (KServe V2, batch 1)", "",
       f"- date: {date}", f"- commit: `{commit}`", f"- machine: {nproc} CPUs (`nproc`), {cpu_model}; "
       "client and server share them",
       "- perf_analyzer 2.50 (tritonclient 2.50.0 wheel), sync mode, random input data; " + (
           f"`{window_args}`, throughput as perf_analyzer reports it" if mode == "windows" else
           f"after a 1000-request warm-up probe, one run of `--request-count N` (N ≈ {secs} s of load); infer/s = "
           "N / (last response − first send) from `--profile-export-file` (perf_analyzer 2.50 divides N by a "
           "whole number of seconds in this mode); its windowed mode (`-p 3000 -r 3 -s 100`) stalls for minutes "
           "in `InferenceProfiler::ValidLatencyMeasurement` at inferd's rates with c ≥ 32"),
       "- latencies in µs over all N requests; server columns from the server's statistics endpoint, "
       "per request",
       "- server compute = Server Compute Input + Infer + Output", "",
       "| system | protocol | model | concurrency | infer/s | p50 µs | p99 µs | server queue µs | server compute µs |",
       "|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    if len(r) == 5:
        out.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | FAILED | | | | |")
    else:
        out.append("| " + " | ".join(r) + " |")

out += ["", "### Server CPU per request (c=32, `scripts/cpu_per_request.sh`)", "",
        "CPU time of every process in the server's session over the successes its statistics endpoint counted "
        "during one perf_analyzer run.", "",
        "| system | model | protocol | server CPU µs/request | requests counted |", "|---|---|---|---|---|"]
for system, model, proto, res in cpu:
    m = re.search(r"infer_s=(\S+) server_cpu_us_per_request=(\S+) \(requests=(\S+)\)", res)
    out.append(f"| {system} | {model} | {proto} | {m[2]} | {m[3]} |" if m else
               f"| {system} | {model} | {proto} | FAILED: {res} | |")

by = {(r[0], r[1], r[2], r[3]): r for r in rows if len(r) > 5}
pairs = [(m, p, c) for (s, p, m, c) in by if s == "triton"]
if pairs:
    out += ["", "### inferd / Triton", "",
            "Triton: 2.51 via PyTriton 0.7.0 (`scripts/peer_triton.sh`), Python backend (mlp through onnxruntime, "
            "identity as a numpy identity), dynamic batcher with 100 µs delay, max batch 64.", "",
            "| model | protocol | concurrency | inferd infer/s | Triton infer/s | throughput ratio | inferd p50 µs | Triton p50 µs | p50 ratio |",
            "|---|---|---|---|---|---|---|---|---|"]
    for m, p, c in pairs:
        t, i = by[("triton", p, m, c)], by.get(("inferd", p, m, c))
        if not i:
            continue
        ratio = lambda a, b: f"{float(a) / float(b):.2f}×" if float(b) else "–"
        out.append(f"| {m} | {p} | {c} | {i[4]} | {t[4]} | {ratio(i[4], t[4])} | {i[5]} | {t[5]} | {ratio(i[5], t[5])} |")

if failures:
    out += ["", "### Failures", "", "```", failures, "```"]
if retries:
    out += ["", "### perf_analyzer runs repeated or cut short", "",
            "perf_analyzer 2.50 now and then hangs after the last request of a `--request-count` run; "
            "those runs were killed and repeated (the figures above come from a complete run), except the CPU "
            "runs, whose CPU and request counts stay valid once the server has answered.", "", "```", retries, "```"]
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
