#!/usr/bin/env bash
# Set up a development environment in .venv: PyTorch (the CPU wheel pinned here), diffucoder with its test
# extras, and bubblewrap for the code sandbox (Debian package; skipped with a notice where apt is unavailable).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch is pinned here (the install path CI uses); the package itself only asks for a range.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
if ! command -v bwrap >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) \
      || echo "notice: could not install bubblewrap; the sandbox will fall back to resource limits only" >&2
  else
    echo "notice: bubblewrap (bwrap) not found; install it for namespace isolation of executed code" >&2
  fi
fi
echo "environment ready: $(.venv/bin/python -c 'import torch, diffucoder; print("torch", torch.__version__, "diffucoder", diffucoder.__version__)')"
