#!/usr/bin/env bash
# Creates .venv in the repo (once) and installs raftmq with its test tools into it.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "raftmq needs Python 3.11 or newer ($PY is $("$PY" --version 2>&1))" >&2
    exit 1
fi
if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
    # Debian ships venv/ensurepip separately.
    if command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
    fi
fi
# The chaos suite's network partitions are nftables rules inside network namespaces (chaos/netns.py).
if ! command -v nft >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
    # Optional (only the partition tests need it), so a failed install warns instead of stopping bootstrap.
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nftables; } >/dev/null 2>&1 \
        || echo "bootstrap: could not install nftables; network-partition tests will be skipped" >&2
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.raftmq-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
# mypy cannot see through setuptools' editable finder, so give it a tree named like the package.
mkdir -p build/typecheck/raftmq
for pkg in cluster broker client chaos; do
    if [ -d "$pkg" ]; then ln -sfn "../../../$pkg" "build/typecheck/raftmq/$pkg"; fi
done
