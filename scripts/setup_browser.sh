#!/usr/bin/env bash
# Installs the browser the dashboard test opens the page in (make test): Debian's `chromium`, with apt-get
# (we run as root), when /usr/bin/chromium is missing. The test drives it with Playwright from .venv
# (scripts/requirements.txt), which never downloads a browser of its own. Safe to run again: it does nothing
# when chromium is there.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "setup_browser: /usr/bin/chromium is missing and there is no apt-get to install it with;" \
    "install Chromium so that /usr/bin/chromium runs it" >&2
  exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends chromium
echo "setup_browser: $(/usr/bin/chromium --version 2>/dev/null)" >&2
