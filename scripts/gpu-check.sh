#!/usr/bin/env bash
# The GPU check in one command, for whoever has an NVIDIA GPU: builds inferd with --features cuda, runs the
# GPU tests (tests/gpu.rs: both backends on KIND_GPU answer as on the CPU) and the device benchmark (inferd at
# concurrency 1 and 64 against raw ONNX Runtime-CUDA and raw candle-CUDA, on the MLP and MiniLM), and records
# the benchmark in benches/RESULTS.md (section "GPU"). Never changes the card's settings.
#
#   scripts/gpu-check.sh [--seconds 5] [--prebuilt DIR]
#
# --prebuilt DIR: use binaries built elsewhere by scripts/gpu-bundle.sh (for a GPU machine without package
# registries): DIR holds inferd, gpu-tests, device_load and ort/ (ONNX Runtime's GPU build), any of them in
# NAME.part-* pieces, which are joined first. cuDNN 9 is then taken from PyTorch's wheel if one is installed.
#
# Needs: a GPU and its driver; nvcc (a CUDA 13 toolkit on PATH, or `eval "$(scripts/cuda-toolchain.sh)"`'s
# PyPI wheels); `make setup` done (MiniLM). ONNX Runtime's GPU build comes from the PyPI wheel
# onnxruntime-gpu==1.31.1 with cuDNN 9 (nvidia-cudnn-cu13), installed into .deps/gpu-venv unless
# ORT_GPU_LIB names a libonnxruntime.so.1.31.1 of that build already (e.g. carried to a machine without a
# package registry).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=5 prebuilt=''
while (($#)); do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --prebuilt) prebuilt=$2; shift 2 ;;
    *) echo "gpu-check: unknown argument $1" >&2; exit 2 ;;
  esac
done

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA GPU here (nvidia-smi finds none); nothing to check" >&2
  exit 1
fi
nvidia-smi -L >&2

mkdir -p target
if [[ -n $prebuilt ]]; then
  for first in $(find "$prebuilt" -name '*.part-aa' | sort); do
    whole=${first%.part-aa}
    cat "$whole".part-* >"$whole" && rm "$whole".part-*
  done
  chmod +x "$prebuilt"/inferd "$prebuilt"/gpu-tests "$prebuilt"/device_load
  ORT_GPU_LIB=$(realpath "$prebuilt/ort/libonnxruntime.so.1.31.1")
  # cuDNN 9 (and cuBLAS, if the toolkit lacks it) from PyTorch's wheels, when the machine has them.
  torch_nvidia=$(python3 -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null || true)
  for d in "$torch_nvidia"/nvidia/*/lib "$torch_nvidia"/nvidia/cu13/lib; do [[ -d $d ]] && LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}; done
fi

# ONNX Runtime's GPU library, and the CUDA/cuDNN libraries its CUDA provider loads.
if [[ -z ${ORT_GPU_LIB:-} ]]; then
  venv=.deps/gpu-venv
  [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q onnxruntime-gpu==1.31.1 nvidia-cudnn-cu13
  ORT_GPU_LIB=$("$venv/bin/python" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.1.31.1"))')
  for d in "$venv"/lib/python*/site-packages/nvidia/*/lib; do LD_LIBRARY_PATH=$d:${LD_LIBRARY_PATH:-}; done
fi
export ORT_DYLIB_PATH=$ORT_GPU_LIB
export LD_LIBRARY_PATH=$(dirname "$ORT_GPU_LIB"):${LD_LIBRARY_PATH:-}:/usr/local/cuda/lib64
export INFERD_ROOT=$PWD RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-1}

if [[ -n $prebuilt ]]; then
  echo "gpu-check: GPU tests (prebuilt)" >&2
  "$prebuilt/gpu-tests" --nocapture 2>&1 | tee target/gpu-tests.log
  echo "gpu-check: device benchmark (${seconds} s per run)" >&2
  "$prebuilt/device_load" --device gpu --seconds "$seconds" | tee target/gpu-bench.md
else
  command -v nvcc >/dev/null || eval "$(scripts/cuda-toolchain.sh)"
  echo "gpu-check: building with --features cuda" >&2
  cargo build --release --locked --features cuda --bin inferd
  echo "gpu-check: GPU tests" >&2
  cargo test --release --locked --features cuda --test gpu -- --nocapture 2>&1 | tee target/gpu-tests.log
  echo "gpu-check: device benchmark (${seconds} s per run)" >&2
  cargo bench --locked --features cuda --bench device_load -- --device gpu --seconds "$seconds" | tee target/gpu-bench.md
fi

python3 - "$seconds" <<'PY'
import subprocess, sys, time
sys.path.insert(0, "scripts")
from perf_common import replace_section
table = [l for l in open("target/gpu-bench.md").read().splitlines() if l.startswith("|")]
gpus = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                      capture_output=True, text=True).stdout.strip()
block = "\n".join([
    f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `scripts/gpu-check.sh --seconds {sys.argv[1]}` "
    f"on {gpus} (`cargo bench --features cuda --bench device_load -- --device gpu`: inferd over gRPC, one row per "
    "request, against the raw runtime in-process at batch 1 and 64). GPU tests: target/gpu-tests.log.",
    "", *table])
replace_section("gpu", "GPU (issue 7)", block)
PY
echo "gpu-check: done; benches/RESULTS.md has the figures" >&2
