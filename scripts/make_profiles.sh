#!/usr/bin/env bash
# Remakes the reference profiles shipped with the example models, which the server watches drift against
# (models/README.md, "Reference profiles"):
#   models/mlp/1/profile.json   5000 rows of standard-normal FP32 inputs, drawn as models/generate.py draws its
#                               inputs (NumPy's default generator, seeded); OUTPUT profiled as a classifier
#   models/minilm/profile.json  the sentences of models/minilm/reference.jsonl (V2 infer requests); in the model
#                               folder, since models/minilm/1 is installed by scripts/setup_minilm.sh, not committed
# Usage, from the repository root (after `make setup`): scripts/make_profiles.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --bin inferd
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

mlp_data="$tmp/standard_normal_seed3_5000x64.npy"
.venv/bin/python - "$mlp_data" <<'PY'
import sys

import numpy as np

np.save(sys.argv[1], np.random.default_rng(3).standard_normal((5000, 64)).astype(np.float32))
PY
target/debug/inferd profile --model-repository models --model mlp --data "$mlp_data" --classifier OUTPUT

if [ ! -f models/minilm/1/model.safetensors ]; then
    echo "models/minilm/1 is not installed: run scripts/setup_minilm.sh (or make setup), then this again" >&2
    exit 1
fi
target/debug/inferd profile --model-repository models --model minilm --data models/minilm/reference.jsonl \
    --out models/minilm/profile.json
