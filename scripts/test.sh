#!/usr/bin/env bash
# The whole test suite: installs what it needs, then lint, types, unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
./scripts/lint.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
