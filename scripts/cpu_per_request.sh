#!/usr/bin/env bash
# A server's CPU time per successful inference over one perf_analyzer run: user + system time of every process
# in the server's session (from /proc), over the successes the server's own statistics endpoint counted during
# the run. Throughput alone hides what a server spends when the client shares its cores; this does not.
#
#   scripts/cpu_per_request.sh SID HOST:HTTP_PORT MODEL PERF_ANALYZER_ARGS...
#   e.g. scripts/cpu_per_request.sh "$SID" 127.0.0.1:8000 mlp -i grpc -u 127.0.0.1:8001 --concurrency-range 32 --request-count 30000
#
# Prints `infer_s=X server_cpu_us_per_request=N (requests=M)`. infer_s is M over the wall time of the
# perf_analyzer run (its start-up included, so it reads a little low; perf_analyzer's own figure divides by
# whole seconds in --request-count mode). perf_analyzer 2.50 now and then never ends a run the server has
# answered, and then ignores SIGTERM: it is killed after CPU_PA_TIMEOUT (120) seconds, the CPU and request
# counts stay valid, and infer_s is printed as NA. PA_DIR: where perf_analyzer is installed (.perf_analyzer).
set -euo pipefail

if (($# < 4)); then
  echo "usage: scripts/cpu_per_request.sh SID HOST:HTTP_PORT MODEL PERF_ANALYZER_ARGS..." >&2
  exit 2
fi
sid=$1 http=$2 model=$3
shift 3
[[ $sid =~ ^[0-9]+$ ]] || { echo "cpu_per_request: SID must be a session id, not '$sid'" >&2; exit 2; }
here=$(dirname "$(realpath "$0")")
pa=$("$here/install_perf_analyzer.sh" "${PA_DIR:-$here/../.perf_analyzer}")

# Clock ticks of the session's processes. /proc/PID/stat's second field (the command) may hold spaces, so the
# fields are counted after its closing parenthesis: session is the 4th after it, utime and stime the 12th and 13th.
cpu_ticks() {
  python3 - "$sid" <<'PY'
import glob, sys
total = 0
for path in glob.glob("/proc/[0-9]*/stat"):
    try:
        fields = open(path).read().rsplit(")", 1)[1].split()
    except OSError:  # the process ended meanwhile
        continue
    if fields[3] == sys.argv[1]:
        total += int(fields[11]) + int(fields[12])
print(total)
PY
}

successes() {
  curl -sf "http://$http/v2/models/$model/stats" | python3 -c '
import json, sys
print(sum(int(m["inference_stats"]["success"]["count"]) for m in json.load(sys.stdin)["model_stats"]))'
}

n0=$(successes) || { echo "cpu_per_request: no statistics for $model at http://$http" >&2; exit 1; }
c0=$(cpu_ticks)
t0=$(date +%s.%N)
rc=0
timeout -k 5 "${CPU_PA_TIMEOUT:-120}" "$pa" -m "$model" "$@" >&2 || rc=$?
t1=$(date +%s.%N)
c1=$(cpu_ticks)
n1=$(successes) || { echo "cpu_per_request: no statistics for $model at http://$http after the run" >&2; exit 1; }
if ((rc == 124 || rc == 137)); then
  echo "cpu_per_request: perf_analyzer did not end after ${CPU_PA_TIMEOUT:-120} s; killed (counts stay valid)" >&2
elif ((rc != 0)); then
  echo "cpu_per_request: perf_analyzer failed (exit $rc)" >&2
  exit "$rc"
fi
python3 - "$c0" "$c1" "$n0" "$n1" "$(getconf CLK_TCK)" "$t0" "$t1" "$rc" <<'PY'
import sys
c0, c1, n0, n1, hz = (int(x) for x in sys.argv[1:6])
t0, t1, rc = float(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8])
n = n1 - n0
if n <= 0:
    sys.exit("cpu_per_request: the server counted no successful request during the run")
rate = "NA" if rc else f"{n / (t1 - t0):.0f}"
print(f"infer_s={rate} server_cpu_us_per_request={(c1 - c0) / hz / n * 1e6:.0f} (requests={n})")
PY
