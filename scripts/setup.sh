#!/usr/bin/env bash
# Set up a development environment in .venv: PyTorch (the CPU wheel pinned here), diffucoder with its test
# extras, bubblewrap for the code sandbox (scripts/install_sandbox.sh; a notice where it cannot be installed), and
# Debian's chromium for the live-view browser test of `diffucoder serve` (root with apt only; the test skips without).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch is pinned here (the install path CI uses); the package itself only asks for a range.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
bash scripts/install_sandbox.sh \
  || echo "notice: bubblewrap could not be installed; the sandbox falls back to resource limits only" >&2
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
      >/dev/null || echo "notice: chromium could not be installed; the live-view browser test will skip" >&2
  else
    echo "notice: no chromium (install Debian's chromium as root); the live-view browser test will skip" >&2
  fi
fi
echo "environment ready: $(.venv/bin/python -c 'import torch, diffucoder; print("torch", torch.__version__, "diffucoder", diffucoder.__version__)')"
