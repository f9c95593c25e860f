#!/usr/bin/env bash
# Installs Triton's perf_analyzer (the standard load generator for KServe V2 servers) into DEST and prints the
# path of the wrapper that runs it.
#
#   scripts/install_perf_analyzer.sh [DEST]        (DEST default: .perf_analyzer in the repository root)
#
# Why it is installed this way: PyPI's `perf-analyzer` package is a placeholder on this platform, and the
# perf_analyzer binaries shipped from tritonclient 2.51 on need glibc 2.38 (Debian 12 has 2.36). The binary in
# the tritonclient==2.50.0 wheel runs on Debian 12 once the loader finds two libraries it was linked against:
# libb64.so.0d (Debian's libb64-0d) and libcudart.so.12 (PyPI's nvidia-cuda-runtime-cu12; loaded only, no GPU
# needed). Nothing is installed system-wide: the wheels are unpacked, the .deb extracted with `dpkg -x`, and a
# wrapper sets LD_LIBRARY_PATH.
#
# Idempotent: an install whose wrapper answers `--version` is kept as it is (whatever its layout); a partial one
# is completed (each step skips what is already there). The wrapper is written last, so it marks a whole install.
set -euo pipefail

root=$(cd "$(dirname "$(realpath "$0")")/.." && pwd)
dest=$(realpath -m "${1:-$root/.perf_analyzer}")
wrapper=$dest/bin/perf_analyzer
if [[ -x $wrapper ]] && "$wrapper" --version >/dev/null 2>&1; then
  echo "$wrapper"
  exit 0
fi

tritonclient=tritonclient==2.50.0
cudart=nvidia-cuda-runtime-cu12==12.9.79 # any 12.x provides libcudart.so.12; pinned for repeatable installs
mkdir -p "$dest"/{dl,bin,lib}

# Wheels are only unpacked, so pip is needed for downloading alone: the interpreter's own if it has one,
# otherwise a throw-away venv's (Debian's python3 ships without pip).
pip=(python3 -m pip)
if ! "${pip[@]}" --version >/dev/null 2>&1; then
  [[ -x $dest/pip-venv/bin/pip ]] || python3 -m venv "$dest/pip-venv" >&2
  pip=("$dest/pip-venv/bin/pip")
fi
if ! compgen -G "$dest/dl/tritonclient-2.50.0-*.whl" >/dev/null || ! compgen -G "$dest/dl/nvidia_cuda_runtime_cu12-*.whl" >/dev/null; then
  echo "install_perf_analyzer: downloading $tritonclient and $cudart from PyPI" >&2
  "${pip[@]}" download -q --no-deps --only-binary=:all: -d "$dest/dl" "$tritonclient" "$cudart" >&2
fi

# The two files we need from the wheels: the perf_analyzer binary and libcudart.so.12.
python3 - "$dest" <<'PY'
import glob, os, sys, zipfile

dest = sys.argv[1]
wanted = [("tritonclient-2.50.0-*.whl", "tritonclient-2.50.0.data/data/bin/perf_analyzer", "bin/perf_analyzer.bin"),
          ("nvidia_cuda_runtime_cu12-*.whl", "nvidia/cuda_runtime/lib/libcudart.so.12", "lib/libcudart.so.12")]
for pattern, member, target in wanted:
    target = os.path.join(dest, target)
    if os.path.exists(target):
        continue
    wheels = sorted(glob.glob(os.path.join(dest, "dl", pattern)))
    if not wheels:
        sys.exit(f"install_perf_analyzer: no {pattern} in {dest}/dl")
    with zipfile.ZipFile(wheels[-1]) as z:
        data = z.read(member)
    with open(target + ".part", "wb") as f:
        f.write(data)
    os.chmod(target + ".part", 0o755)
    os.replace(target + ".part", target)
PY

if [[ ! -e $dest/lib/libb64.so.0d ]]; then
  if ! compgen -G "$dest/dl/libb64-0d_*.deb" >/dev/null; then
    echo "install_perf_analyzer: downloading libb64-0d from Debian" >&2
    # apt-get download needs the package lists; a fresh container has none until `apt-get update`.
    (cd "$dest/dl" && { apt-get download libb64-0d >&2 2>/dev/null || { apt-get update >&2 && apt-get download libb64-0d >&2; }; })
  fi
  rm -rf "$dest/deb"
  dpkg -x "$(compgen -G "$dest/dl/libb64-0d_*.deb" | tail -n 1)" "$dest/deb"
  cp -L "$(find "$dest/deb" -name 'libb64.so.0d' | head -n 1)" "$dest/lib/libb64.so.0d"
  rm -rf "$dest/deb"
fi

cat >"$wrapper.part" <<EOF
#!/bin/sh
# Written by scripts/install_perf_analyzer.sh: perf_analyzer from tritonclient 2.50.0 with its two libraries.
export LD_LIBRARY_PATH=$dest/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
exec $dest/bin/perf_analyzer.bin "\$@"
EOF
chmod +x "$wrapper.part"
if ! "$wrapper.part" --version >/dev/null 2>&1; then
  echo "install_perf_analyzer: $dest/bin/perf_analyzer.bin does not start:" >&2
  "$wrapper.part" --version >&2 || true
  exit 1
fi
mv "$wrapper.part" "$wrapper"
echo "$wrapper"
