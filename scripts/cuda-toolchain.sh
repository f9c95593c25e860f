#!/usr/bin/env bash
# A CUDA 13.0 build toolchain for `--features cuda` on a machine with no GPU, no CUDA toolkit and no driver,
# from PyPI wheels only, into .deps/cuda/ (git-ignored). Prints the environment the build needs:
#   eval "$(scripts/cuda-toolchain.sh)" && cargo build --release --features cuda
# Safe to run again: it does nothing when done. ~100 MB of wheels, ~270 MB installed.
#
# Why each piece:
# - candle-kernels' build script (cudaforge) runs nvcc on its .cu files: PTX for most kernels, a static
#   library (libmoe.a, real GPU code) for the MoE/GGUF ones. nvcc, cicc (nvvm), the CUDA runtime headers,
#   the crt/ headers and CCCL come as wheels that all unpack under nvidia/cu13/ (bin/, nvvm/, include/, lib/).
#   13.0 rather than the newest: the PTX then loads on any driver from CUDA 13.0 on.
# - Without nvidia-smi, cudaforge takes the GPU architecture from CUDA_COMPUTE_CAP: 90 (H100/H200, built
#   as sm_90a, which runs on compute capability 9.0 only) unless set before running this script (e.g. 80
#   for A100, 89 for L4/L40S). Where nvidia-smi answers, it is left to cudaforge's own detection.
# - candle links cudarc with `dynamic-linking`: the final link needs libcuda, libnvrtc, libcurand,
#   libcublas, libcublasLt (and candle-kernels libcudart). The driver is not on PyPI and cuBLAS is a
#   ~500 MB wheel, so those five are stubs: one function per symbol cudarc binds (taken from cudarc's own
#   sources), each returning an error, with the real libraries' sonames, so the binary asks for the real
#   ones at run time. They go in $CUDA_HOME/lib/stubs, where a toolkit keeps its libcuda stub and where
#   cudarc's build script already points the linker. libcudart is the real one, from the runtime wheel.
#   Each stub also answers to its soname, so LD_LIBRARY_PATH=$CUDA_HOME/lib/stubs starts such a binary
#   here (`--help`; `serve` then logs "CUDA_ERROR_STUB_LIBRARY" and runs on the CPU). Never on a GPU machine.
# - The binary needs the real CUDA 13 libraries (driver + cuBLAS, cuRAND, NVRTC, cudart) where it runs.
set -euo pipefail
trap 'echo false' ERR   # on failure, `eval "$(scripts/cuda-toolchain.sh)" && cargo ...` stops at the eval
cd "$(dirname "$0")/.."
root=$PWD/.deps/cuda
cuda=$root/nvidia/cu13
wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)

if [[ ! -x $cuda/bin/nvcc || "$(cat "$root/.wheels" 2>/dev/null)" != "${wheels[*]}" ]]; then
  rm -rf "$root"
  "${PYTHON:-python3}" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --target "$root" "${wheels[@]}" >&2
  ln -sf libcudart.so.13 "$cuda/lib/libcudart.so"   # the unversioned name `-lcudart` looks for
  echo "${wheels[*]}" >"$root/.wheels"
fi

# The stubs, from the cudarc in Cargo.lock (its sys modules name every symbol in `load::<_F>("name")`).
cudarc=$(cargo metadata --format-version 1 --locked --features cuda | "${PYTHON:-python3}" -c '
import json, os, sys
print(next(os.path.dirname(p["manifest_path"]) for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"))')
stubs=$cuda/lib/stubs
if [[ "$(cat "$stubs/.from" 2>/dev/null)" != "$cudarc" ]]; then
  rm -rf "$stubs" && mkdir -p "$stubs"
  for spec in driver:cuda:libcuda.so.1 nvrtc:nvrtc:libnvrtc.so.13 curand:curand:libcurand.so.10 \
              cublas:cublas:libcublas.so.13 cublaslt:cublasLt:libcublasLt.so.13; do
    IFS=: read -r module lib soname <<<"$spec"
    # 34 = CUDA_ERROR_STUB_LIBRARY, what NVIDIA's own stubs answer
    grep -oE 'load::<_F>\("[A-Za-z0-9_]+"\)' "$cudarc/src/$module/sys/mod.rs" | sort -u |
      sed -E 's/.*"(.*)".*/int \1(void) { return 34; }/' >"$stubs/$lib.c"
    cc -shared -fPIC -Wl,-soname,"$soname" -o "$stubs/lib$lib.so" "$stubs/$lib.c"
    ln -sf "lib$lib.so" "$stubs/$soname"
  done
  echo "$cudarc" >"$stubs/.from"
fi

printf 'export PATH=%q:"$PATH"\n' "$cuda/bin"                   # nvcc
printf 'export CUDA_HOME=%q\n' "$cuda"                           # cudarc: link search in lib/ and lib/stubs
# cudaforge asks nvidia-smi for the GPU architecture; where there is none it must be told
if [[ -n ${CUDA_COMPUTE_CAP:-} ]] || ! nvidia-smi --query-gpu=compute_cap --format=csv >/dev/null 2>&1; then
  printf 'export CUDA_COMPUTE_CAP=%q\n' "${CUDA_COMPUTE_CAP:-90}"
fi
