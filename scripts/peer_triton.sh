#!/usr/bin/env bash
# Starts the reference Triton peer (scripts/peer_triton.py: Triton 2.51 from PyPI's nvidia-pytriton, Python
# backend, Triton's dynamic batcher) in its own session on 127.0.0.1, waits until every model is ready and
# prints its process group id (stop it with `kill -- -PGID`).
#
#   scripts/peer_triton.sh VENV_DIR [--port-base 18000] [--delay-us 100] [--max-batch 64] NAME=SPEC ...
#   e.g. scripts/peer_triton.sh .peer mlp=models/mlp/1/model.onnx identity=identity:FP32:64
#
# SPEC: PATH.onnx, or identity:DTYPE:DIMS (OUTPUT0 = INPUT0; see peer_triton.py). HTTP on the port base, gRPC
# on base+1, metrics on base+2. The first run installs nvidia-pytriton and onnxruntime into VENV_DIR (a few
# minutes); later runs reuse it. The peer's log is VENV_DIR/peer-PORT.log. PEER_READY_TIMEOUT: seconds to wait
# for readiness (default 180).
set -euo pipefail
set +m # no job control: `setsid` must not fork, so that $! is the peer's process group and session id

usage="usage: scripts/peer_triton.sh VENV_DIR [--port-base N] [--delay-us N] [--max-batch N] NAME=SPEC ..."
if (($# < 2)) || [[ $1 == -* ]]; then
  if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
    exit 0
  fi
  echo "$usage" >&2
  exit 2
fi
here=$(dirname "$(realpath "$0")")
venv=$(realpath -m "$1")
shift

# The port base and model names, to wait for readiness; peer_triton.py checks the arguments themselves.
port=18000 names=() args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    --port-base) port=${args[i + 1]:-}; i=$((i + 1)) ;;
    --port-base=*) port=${args[i]#*=} ;;
    --delay-us | --max-batch) i=$((i + 1)) ;;
    *=*) [[ ${args[i]} == --* ]] || names+=("${args[i]%%=*}") ;;
  esac
done
[[ $port =~ ^[0-9]+$ ]] || { echo "peer_triton: --port-base needs a number" >&2; exit 2; }
((${#names[@]})) || { echo "$usage" >&2; exit 2; }

# onnxruntime pinned to the version inferd links (.deps), so that both servers run the same kernels.
packages=(nvidia-pytriton==0.7.0 onnxruntime==1.31.1)
stamp=$venv/.installed
if [[ ! -x $venv/bin/python || $(cat "$stamp" 2>/dev/null) != "${packages[*]}" ]]; then
  echo "peer_triton: installing ${packages[*]} into $venv (a few minutes the first time)" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q "${packages[@]}" >&2
  echo "${packages[*]}" >"$stamp"
fi

busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$port" $((port + 1)) $((port + 2)); do
  if busy "$p"; then echo "peer_triton: port $p is already in use" >&2; exit 1; fi
done

# Triton's Python backend stub links libpython: it must find the venv interpreter's, not the system's.
libdir=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
log=$venv/peer-$port.log
LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} PYTRITON_HOME=$venv/home \
  setsid "$venv/bin/python" "$here/peer_triton.py" "$@" >"$log" 2>&1 &
pgid=$!

deadline=$((SECONDS + ${PEER_READY_TIMEOUT:-180}))
while ((SECONDS < deadline)); do
  ready=1
  for n in "${names[@]}"; do
    curl -sf "http://127.0.0.1:$port/v2/models/$n/ready" >/dev/null || { ready=0; break; }
  done
  if ((ready)); then
    echo "$pgid"
    exit 0
  fi
  kill -0 "$pgid" 2>/dev/null || { echo "peer_triton: the peer exited during start-up; $log:" >&2; tail -n 20 "$log" >&2; exit 1; }
  sleep 1
done
echo "peer_triton: not ready after ${PEER_READY_TIMEOUT:-180} s; see $log" >&2
kill -- -"$pgid" 2>/dev/null || true
exit 1
