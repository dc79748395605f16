#!/usr/bin/env bash
# Set up a development environment in .venv: PyTorch (the CPU wheel pinned here), diffucoder with its test
# extras, and bubblewrap for the code sandbox (scripts/install_sandbox.sh; a notice where it cannot be installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# torch is pinned here (the install path CI uses); the package itself only asks for a range.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
bash scripts/install_sandbox.sh \
  || echo "notice: bubblewrap could not be installed; the sandbox falls back to resource limits only" >&2
echo "environment ready: $(.venv/bin/python -c 'import torch, diffucoder; print("torch", torch.__version__, "diffucoder", diffucoder.__version__)')"
