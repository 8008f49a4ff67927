#!/usr/bin/env bash
# Run a local 3-node raftmq cluster on 127.0.0.1 in one command (Ctrl-C stops every node).
# Installs the project into .venv first if needed. Flags go to `raftmq dev`, e.g.:
#   ./scripts/cluster.sh --nodes 5 --fresh --no-demo
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/raftmq dev "$@"
