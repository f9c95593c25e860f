#!/usr/bin/env bash
# Builds, on a CPU machine with package registries, everything scripts/gpu-check.sh needs on a GPU machine
# that has none (CUDA 13 and a driver, but no crates.io or PyPI), into .gpu/bundle/ (git-ignored), in parts
# small enough to carry (64 MiB per transfer): the server and the GPU test and benchmark binaries built with
# --features cuda (scripts/cuda-toolchain.sh), and ONNX Runtime's GPU build from the PyPI wheel
# onnxruntime-gpu==1.31.1. On the GPU machine: scripts/gpu-check.sh --prebuilt .gpu/bundle (it joins the parts).
set -euo pipefail
cd "$(dirname "$0")/.."
out=.gpu/bundle
part=60M
rm -rf "$out" && mkdir -p "$out"

eval "$(scripts/cuda-toolchain.sh)"
cargo build --release --locked --features cuda --bin inferd --test gpu --bench device_load \
  --message-format=json-render-diagnostics >"$out/build.json"
python3 - "$out" <<'PY'
import json, shutil, sys
out = sys.argv[1]
for line in open(f"{out}/build.json"):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        name = {"bin": "inferd", "test": "gpu-tests", "bench": "device_load"}[m["target"]["kind"][0]]
        shutil.copy(m["executable"], f"{out}/{name}")
PY
rm "$out/build.json"
# Without debug info the binaries shrink to what a few transfers carry.
strip "$out"/inferd "$out"/gpu-tests "$out"/device_load

# ONNX Runtime's GPU build: the runtime and its CUDA provider (cuDNN 9 comes from the GPU machine's PyTorch).
wheel=$(mktemp -d)
.venv/bin/python -m pip download -q --no-deps onnxruntime-gpu==1.31.1 -d "$wheel"
python3 -m zipfile -e "$wheel"/onnxruntime_gpu-*.whl "$wheel/x"
mkdir -p "$out/ort"
cp "$wheel"/x/onnxruntime/capi/libonnxruntime{.so.1.31.1,_providers_shared.so,_providers_cuda.so} "$out/ort/"
rm -rf "$wheel"

# Anything above one transfer travels in parts: NAME.part-aa, -ab, ...
find "$out" -type f -size +"$part" | while read -r f; do split -b "$part" "$f" "$f.part-" && rm "$f"; done
du -sh "$out" && find "$out" -type f | sort
