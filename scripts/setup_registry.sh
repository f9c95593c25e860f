#!/usr/bin/env bash
# Installs the real stores the remote-repository tests run against (make test), into project-local folders:
#   .deps/s3s/bin/s3s-fs   an S3-compatible server from crates.io (s3s-fs: checks SigV4 signatures against the
#                          access key it is given, keeps objects on disk across restarts)
#   .deps/mlflow/          a Python environment with an MLflow tracking server and client (PyPI mlflow, onnx)
#   .deps/azurite/         Microsoft's Azure Storage emulator, Azurite (npm), for az:// repositories
# boto3 and azure-storage-blob, the clients the tests fill stores with, are in .venv (scripts/requirements.txt).
# Safe to run again: it does nothing when done.
set -euo pipefail
cd "$(dirname "$0")/.."
S3S_VERSION=0.14.1
MLFLOW_REQUIREMENTS=scripts/requirements-mlflow.txt
if [[ ! -x .deps/s3s/bin/s3s-fs ]] || ! grep -qx "$S3S_VERSION" .deps/s3s/.version 2>/dev/null; then
  # 0.14.1: later versions need a newer rustc than this toolchain's.
  cargo install "s3s-fs@$S3S_VERSION" --features binary --locked --root .deps/s3s
  echo "$S3S_VERSION" > .deps/s3s/.version
fi
AZURITE_VERSION=3.37.0
if [[ ! -x .deps/azurite/node_modules/.bin/azurite-blob ]] || ! grep -qx "$AZURITE_VERSION" .deps/azurite/.version 2>/dev/null; then
  mkdir -p .deps/azurite
  (cd .deps/azurite && npm install --no-audit --no-fund --silent "azurite@$AZURITE_VERSION")
  echo "$AZURITE_VERSION" > .deps/azurite/.version
fi
stamp=.deps/mlflow/.inferd-setup
if [[ ! -f $stamp ]] || ! cmp -s "$MLFLOW_REQUIREMENTS" "$stamp"; then
  python=${PYTHON:-python3}
  [[ -x .deps/mlflow/bin/python ]] || "$python" -m venv .deps/mlflow
  .deps/mlflow/bin/python -m pip install -q --disable-pip-version-check -r "$MLFLOW_REQUIREMENTS"
  cp "$MLFLOW_REQUIREMENTS" "$stamp"
  echo "setup: MLflow in .deps/mlflow" >&2
fi
