#!/usr/bin/env bash
# Writes the cluster secret (32 random bytes, hex) to cluster.secret beside this script, readable
# by its owner only. The file is ignored by git and by the image build; kustomization.yaml turns it
# into the Secret raftmq-secret. Every node must share one secret, so an existing file is kept
# unless --force is given (replacing it on a running cluster needs the procedure in
# docs/operations.md, "Rotate the cluster secret").
set -euo pipefail
cd "$(dirname "$0")"
target=cluster.secret
if [ -e "$target" ] && [ "${1:-}" != "--force" ]; then
    echo "make-secret.sh: $PWD/$target already exists; keeping it (pass --force to replace it)" >&2
    exit 1
fi
umask 077
secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
if [ "${#secret}" -ne 64 ]; then
    echo "make-secret.sh: could not read 32 random bytes from /dev/urandom" >&2
    exit 1
fi
printf '%s\n' "$secret" > "$target.tmp"
mv "$target.tmp" "$target"
echo "make-secret.sh: wrote $PWD/$target"
