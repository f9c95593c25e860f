#!/usr/bin/env bash
# Prints the path of the protoc that the protoc-bin-vendored crate carries (the one inferd's own build uses),
# for dependencies whose build scripts need PROTOC, e.g.
#   PROTOC=$(scripts/protoc-path.sh) cargo build --features candle-onnx
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --locked | python3 -c '
import json, os, platform, sys
arch = {"x86_64": "linux-x86_64", "aarch64": "linux-aarch_64"}.get(platform.machine(), platform.machine())
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "protoc-bin-vendored-" + arch:
        print(os.path.join(os.path.dirname(p["manifest_path"]), "bin", "protoc"))
        break
else:
    sys.exit("protoc-path: no protoc-bin-vendored package for " + arch)
'
