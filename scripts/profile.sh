#!/usr/bin/env bash
# Where the server's CPU goes: `perf record` of a running inferd while perf_analyzer loads it, at concurrency 1
# and 32 over HTTP and gRPC, each turned into a flame graph (SVG) and a table of the hottest functions.
#
#   scripts/profile.sh [--binary BIN] [--model MODEL] [--seconds S] [--out DIR] [--tag TAG]
#                                               (or `make profile`; defaults: target/release/inferd, identity, 8 s,
#                                                benches/flamegraphs, the binary's commit)
#
# Writes DIR/TAG-PROTOCOL-cC.svg (open in a browser: hover for names, click to zoom) and DIR/TAG-PROTOCOL-cC.txt
# (self time per function, the top 40, and the share of samples in the kernel, in thread switching and in the
# allocator). Stacks are unwound from DWARF (the release profile keeps line tables), sampled at 999 Hz on every
# thread of the server; the client's samples are not in them. Needs `perf` (Debian: linux-perf) and installs
# inferno's flame graph tools from crates.io into .deps/inferno on first use.
set -euo pipefail
set +m

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
cd "$root"
bin=target/release/inferd model=identity seconds=8 out=benches/flamegraphs tag=''
while (($#)); do
  case $1 in
    --binary) bin=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "profile: unknown argument: $1" >&2; exit 2 ;;
  esac
done
tag=${tag:-$(git rev-parse --short HEAD)}
command -v perf >/dev/null || { echo "profile: perf is not installed (Debian: apt-get install linux-perf)" >&2; exit 1; }
[[ -x $bin ]] || { echo "profile: $bin not built (cargo build --release)" >&2; exit 1; }
inferno=.deps/inferno/bin
if [[ ! -x $inferno/inferno-flamegraph ]]; then
  echo "profile: installing inferno (flame graphs) into .deps/inferno" >&2
  cargo install --quiet --locked inferno --version 0.12.8 --root .deps/inferno
fi
pa=$(scripts/install_perf_analyzer.sh .perf_analyzer)
mkdir -p "$out" target/profile
port=${PROFILE_PORT_BASE:-18400}
log=target/profile/inferd.log
setsid "$bin" serve --model-repository models --http-port "$port" --grpc-port $((port + 1)) \
  --metrics-port $((port + 2)) >"$log" 2>&1 &
pid=$!
trap 'kill -- -"$pid" 2>/dev/null || true' EXIT
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/v2/models/$model/ready" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/v2/models/$model/ready" >/dev/null || { echo "profile: $model not ready; see $log" >&2; exit 1; }

for proto in http grpc; do
  url=127.0.0.1:$port
  [[ $proto == grpc ]] && url=127.0.0.1:$((port + 1))
  for c in 1 32; do
    name=$tag-$proto-c$c data=target/profile/$tag-$proto-c$c.data
    echo "profile: $model $proto c=$c, $seconds s" >&2
    # More requests than the window needs; the client is stopped once perf is done.
    timeout -k 2 $((seconds + 30)) "$pa" -m "$model" -i "$proto" -u "$url" -b 1 --concurrency-range "$c" \
      --request-count 10000000 >/dev/null 2>&1 &
    client=$!
    sleep 2 # connections set up, warm
    perf record -q -F 999 --call-graph dwarf,16384 -p "$pid" -o "$data" -- sleep "$seconds" 2>/dev/null
    kill "$client" 2>/dev/null || true
    wait "$client" 2>/dev/null || true
    perf script -i "$data" 2>/dev/null | "$inferno/inferno-collapse-perf" --all >"target/profile/$name.folded"
    "$inferno/inferno-flamegraph" --title "inferd $model $proto c=$c ($tag)" --width 1600 --minwidth 0.2 \
      <"target/profile/$name.folded" >"$out/$name.svg"
    python3 - "target/profile/$name.folded" "$model" "$proto" "$c" "$tag" >"$out/$name.txt" <<'PY'
import collections, sys
path, model, proto, c, tag = sys.argv[1:]
self_time, total = collections.Counter(), 0
kernel = switching = alloc = 0
for line in open(path):
    stack, _, n = line.rstrip("\n").rpartition(" ")
    n = int(n)
    frames = stack.split(";")
    leaf = frames[-1]
    self_time[leaf] += n
    total += n
    if leaf.endswith("_[k]") or "[kernel" in leaf:
        kernel += n
    if any(f.startswith(("schedule", "__schedule", "finish_task_switch", "futex_wait", "futex_wake"))
           for f in frames):
        switching += n
    if any(f.split("::")[-1] in ("malloc", "free", "realloc", "calloc", "_int_malloc", "_int_free", "cfree")
           or f.startswith(("malloc", "_int_malloc", "_int_free", "__libc_malloc", "__libc_free")) for f in frames):
        alloc += n
pct = lambda n: 100.0 * n / max(total, 1)
print(f"inferd {model} {proto} c={c} ({tag}): {total} samples")
print(f"kernel (leaf) {pct(kernel):.1f}%, under schedule/futex {pct(switching):.1f}%, allocator {pct(alloc):.1f}%")
print()
for name, n in self_time.most_common(40):
    print(f"{pct(n):5.1f}%  {name[:160]}")
PY
    rm -f "$data"
  done
done
echo "profile: wrote $out/$tag-{http,grpc}-c{1,32}.{svg,txt}" >&2
