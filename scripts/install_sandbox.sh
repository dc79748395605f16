#!/usr/bin/env bash
# Install what the code sandbox (diffucoder.execution) needs for namespace isolation: bubblewrap.
# Without it the sandbox still works, under resource limits only, and warns.
#   scripts/install_sandbox.sh            (Debian/Ubuntu; needs root or sudo)
set -euo pipefail
if command -v bwrap >/dev/null 2>&1; then
    echo "bubblewrap already installed: $(bwrap --version)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap
elif command -v dnf >/dev/null 2>&1; then
    $SUDO dnf install -y bubblewrap
else
    echo "install bubblewrap with your package manager (no apt-get or dnf found)" >&2
    exit 1
fi
bwrap --version
