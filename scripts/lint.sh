#!/usr/bin/env bash
# ruff (lint) and mypy --strict over the whole project.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
pkgs=()
for pkg in cluster broker client chaos; do
    if [ -f "$pkg/__init__.py" ]; then pkgs+=(-p "raftmq.$pkg"); fi
done
.venv/bin/ruff check .
MYPYPATH=build/typecheck .venv/bin/mypy "${pkgs[@]}"
MYPYPATH=build/typecheck .venv/bin/mypy tests bench --explicit-package-bases
