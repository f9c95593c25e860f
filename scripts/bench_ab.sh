#!/usr/bin/env bash
# Two inferd binaries side by side, alternating, on the example mlp (batch 1 per request): server CPU per
# request at concurrency 1 and 32 over gRPC and HTTP, from scripts/cpu_per_request.sh (perf_analyzer
# --request-count runs), and the requests answered per second of each run timed from outside (it includes
# perf_analyzer's start, so it reads a little low; perf_analyzer's own figure is whole seconds in this mode).
# For "did this change cost anything": A is the binary before, B after. scripts/bench_overhead.py is the
# fuller report (more models, large tensors, p50, the Triton peer).
#
#   scripts/bench_ab.sh A_BINARY B_BINARY [ROUNDS]     (ROUNDS default 5)
#
# Prints one line per run and, per cell, the median over the rounds of each binary. Each perf_analyzer run is
# cut after BENCH_AB_TIMEOUT (60) seconds (perf_analyzer 2.50 now and then never ends a run the server has
# answered); the CPU and request counts stay valid, and that run's rate is left out of the medians.
# BENCH_AB_REQUESTS_C1 / _C32 (5000 / 60000) size the runs.
set -euo pipefail
set +m # no job control: `setsid` must not fork, so that $! is the server's session id

a=$(realpath "$1") b=$(realpath "$2") rounds=${3:-5}
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
export PA_DIR=$root/.perf_analyzer
scripts/install_perf_analyzer.sh "$PA_DIR" >/dev/null
lib=$root/.deps/lib/libonnxruntime.so.1.31.1
port=${BENCH_PORT_BASE:-18100}
http=127.0.0.1:$port grpc=127.0.0.1:$((port + 1))
timeout_s=${BENCH_AB_TIMEOUT:-60}
rows=$(mktemp)

run() { # LABEL BINARY
  local label=$1 bin=$2 pid sid
  setsid "$bin" serve --model-repository models --onnxruntime-library "$lib" --http-port "$port" \
    --grpc-port $((port + 1)) --metrics-port $((port + 2)) >/dev/null 2>&1 &
  pid=$!
  sid=$(ps -o sid= -p "$pid" | tr -d ' ')
  for _ in $(seq 300); do curl -sf "http://$http/v2/health/ready" >/dev/null && break; sleep 0.1; done
  for proto in grpc http; do
    local url=$http
    [[ $proto == grpc ]] && url=$grpc
    for c in 1 32; do
      local n=$((c == 1 ? ${BENCH_AB_REQUESTS_C1:-5000} : ${BENCH_AB_REQUESTS_C32:-60000}))
      # cpu_per_request.sh times the run from outside (infer_s) and kills a perf_analyzer that hangs.
      CPU_PA_TIMEOUT=$timeout_s scripts/cpu_per_request.sh "$sid" "$http" mlp -i "$proto" -u "$url" -b 1 \
        --concurrency-range "$c" --request-count "$n" >"$rows.run" 2>/dev/null || true
      local res per_s
      res=$(tail -n 1 "$rows.run")
      per_s=$(sed -n 's/^infer_s=\([0-9NA]*\) .*/\1/p' <<<"$res")
      echo "$label $proto c=$c answered_per_s=${per_s:-NA} $res"
      echo "$label $proto $c answered_per_s=${per_s:-NA} $res" >>"$rows"
    done
  done
  kill -- -"$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

for _ in $(seq "$rounds"); do
  run A "$a"
  run B "$b"
done
python3 - "$rows" <<'PY'
import re, statistics, sys
cells = {}
for line in open(sys.argv[1]):
    label, proto, c, rest = line.split(maxsplit=3)
    m = re.search(r"answered_per_s=(\d+|NA) .*server_cpu_us_per_request=(\d+)", rest)
    if m:
        rate = None if m[1] == "NA" else int(m[1])  # NA: perf_analyzer hung and was killed
        cells.setdefault((proto, int(c)), {}).setdefault(label, []).append((rate, int(m[2])))
print("\n| mlp, batch 1 | A answered/s | B answered/s | A server CPU µs/request | B server CPU µs/request |")
print("|---|---|---|---|---|")
for (proto, c), by in sorted(cells.items()):
    def med(label, i):
        values = [x[i] for x in by.get(label, []) if x[i] is not None]
        return f"{statistics.median(values):.0f}" if values else "–"
    print(f"| {proto} c={c} | {med('A', 0)} | {med('B', 0)} | {med('A', 1)} | {med('B', 1)} |")
PY
rm -f "$rows" "$rows.run"
