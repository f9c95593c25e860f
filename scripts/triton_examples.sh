#!/usr/bin/env bash
# Runs Triton's own Python client examples, unchanged, against inferd serving models/, and prints PASS or FAIL
# per example (a failure with the last line it printed). Not part of `make test`: the examples come from a
# checkout of triton-inference-server/client, which the tests cannot fetch.
#
# usage: scripts/triton_examples.sh [EXAMPLES_DIR] [EXAMPLE ...]
#   EXAMPLES_DIR  the client repository's src/python/examples (default /work/triton-client/src/python/examples)
#   EXAMPLE       example names without .py (default: the list below)
# env: INFERD_BIN (default the newer of target/release/inferd and target/debug/inferd), PYTHON (default .venv/bin/python)
#
# An example passes when it exits 0 and, if it prints a "PASS" line on success, printed one: several of
# Triton's examples exit 0 even when the error wording they check for does not match.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)

EXAMPLES_DIR=${1:-/work/triton-client/src/python/examples}
[ $# -gt 0 ] && shift
DEFAULT_EXAMPLES=(
  simple_http_infer_client simple_grpc_infer_client
  simple_http_async_infer_client simple_grpc_async_infer_client
  simple_http_aio_infer_client simple_grpc_aio_infer_client
  simple_grpc_custom_args_client simple_grpc_keepalive_client
  simple_http_string_infer_client simple_grpc_string_infer_client
  grpc_explicit_int_content_client grpc_explicit_int8_content_client grpc_explicit_byte_content_client
  simple_http_health_metadata simple_grpc_health_metadata
  simple_http_model_control
  simple_http_sequence_sync_infer_client simple_grpc_sequence_sync_infer_client
  simple_grpc_sequence_stream_infer_client simple_grpc_aio_sequence_stream_infer_client
  simple_http_shm_client simple_grpc_shm_client simple_http_shm_string_client simple_grpc_shm_string_client
  reuse_infer_objects_client
)
# Left out: simple_grpc_model_control expects StatusCode.INTERNAL for a load whose file override names a path
# component longer than NAME_MAX (Triton's own TODO there says INVALID_ARGUMENT is right); inferd answers
# INVALID_ARGUMENT, as it does for every bad request. Pass it by name to run it. Also left out: the CUDA shared
# memory examples (no CUDA IPC), the image examples (models not in models/), simple_grpc_custom_repeat (a
# decoupled model, repeat_int32, that inferd does not have).
if [ $# -gt 0 ]; then EXAMPLES=("$@"); else EXAMPLES=("${DEFAULT_EXAMPLES[@]}"); fi

PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
if [ -z "${INFERD_BIN:-}" ]; then
  # The newer build: a stale release binary may predate models/ (an unknown backend, a server never ready).
  INFERD_BIN=target/debug/inferd
  if [ -x target/release/inferd ] && { [ ! -x "$INFERD_BIN" ] || [ target/release/inferd -nt "$INFERD_BIN" ]; }; then
    INFERD_BIN=target/release/inferd
  fi
fi
[ -d "$EXAMPLES_DIR" ] || { echo "no examples folder at $EXAMPLES_DIR" >&2; exit 2; }
[ -x "$INFERD_BIN" ] || { echo "no inferd binary at $INFERD_BIN: run cargo build --bin inferd" >&2; exit 2; }
[ -x "$PYTHON" ] || { echo "no Python at $PYTHON: run make setup" >&2; exit 2; }

LOGS=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  rm -rf "$LOGS"
}
trap cleanup EXIT

free_ports() {
  "$PYTHON" -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))'
}

# start NAME EXTRA_ARGS...: starts a server (Triton's server id, so the metadata examples find "triton"),
# waits until it is ready, and sets NAME_HTTP / NAME_GRPC to its addresses.
start() {
  local name=$1; shift
  local ports; read -r -a ports <<<"$(free_ports)"
  "$INFERD_BIN" serve --id triton \
    --http-address 127.0.0.1 --grpc-address 127.0.0.1 --metrics-address 127.0.0.1 \
    --http-port "${ports[0]}" --grpc-port "${ports[1]}" --metrics-port "${ports[2]}" "$@" \
    >"$LOGS/$name.log" 2>&1 &
  PIDS+=($!)
  local pid=$!
  local deadline=$((SECONDS + 90))
  while [ $SECONDS -lt $deadline ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "inferd ($name) exited before it was ready:" >&2; tail -5 "$LOGS/$name.log" >&2; exit 2
    fi
    if curl -sf "http://127.0.0.1:${ports[0]}/v2/health/ready" >/dev/null 2>&1; then
      printf -v "${name}_HTTP" '%s' "127.0.0.1:${ports[0]}"
      printf -v "${name}_GRPC" '%s' "127.0.0.1:${ports[1]}"
      return
    fi
    sleep 0.1
  done
  echo "inferd ($name) not ready within 90 s (with --strict-readiness, every model must load)" >&2; tail -5 "$LOGS/$name.log" >&2; exit 2
}

# repository NAME COUNT: a repository of COUNT of the small example models, `simple` first. Triton's model
# control examples check the size of the repository index (7 over HTTP, 8 over gRPC: the repositories of
# Triton's own test runs), so each runs against a repository of the size it expects.
repository() {
  local dir="$LOGS/$1" count=$2 n=0
  mkdir -p "$dir"
  for m in simple $(cd models && ls -d */ | tr -d / | grep -v -x -e simple -e 'minilm.*'); do
    [ $n -lt "$count" ] || break
    cp -r "models/$m" "$dir/$m" && n=$((n + 1))
  done
  [ $n -eq "$count" ] || { echo "models/ has fewer than $count small models" >&2; exit 2; }
  echo "$dir"
}

start MAIN --model-repository models
# The model control examples load and unload `simple` themselves.
start CONTROL7 --model-repository "$(repository control7 7)" --model-control-mode explicit
start CONTROL8 --model-repository "$(repository control8 8)" --model-control-mode explicit

passed=0
failed=0
for ex in "${EXAMPLES[@]}"; do
  file="$EXAMPLES_DIR/$ex.py"
  if [ ! -f "$file" ]; then
    echo "FAIL $ex: no such example in $EXAMPLES_DIR"; failed=$((failed + 1)); continue
  fi
  case $ex in
    *model_control*) http=$CONTROL7_HTTP grpc=$CONTROL8_GRPC ;;
    *) http=$MAIN_HTTP grpc=$MAIN_GRPC ;;
  esac
  case $ex in
    *http*|image_client|reuse_infer_objects_client) url=$http ;;
    *) url=$grpc ;;
  esac
  out=$(cd "$EXAMPLES_DIR" && timeout 120 "$PYTHON" "$ex.py" -u "$url" 2>&1)
  rc=$?
  last=$(printf '%s\n' "$out" | grep -v '^\s*$' | tail -n 1)
  if [ $rc -eq 0 ] && { ! grep -q 'print("PASS' "$file" || printf '%s\n' "$out" | grep -q '^PASS'; }; then
    echo "PASS $ex"; passed=$((passed + 1))
  elif [ $rc -eq 0 ]; then
    echo "FAIL $ex: exited 0 without its PASS line; last line: $last"; failed=$((failed + 1))
  else
    echo "FAIL $ex (exit $rc): $last"; failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
