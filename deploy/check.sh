#!/usr/bin/env bash
# Lints, renders, validates and scans the Helm chart, offline (no cluster, no
# helm binary). Installs its pinned Python tools into a project venv on first
# use; idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.dev-data/deploy-venv"
REQ="$ROOT/deploy/requirements.txt"
STAMP="$VENV/.requirements"

if ! cmp -s "$REQ" "$STAMP" 2>/dev/null; then
  echo "==> installing chart check tools into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
  cp "$REQ" "$STAMP"
fi
exec "$VENV/bin/python" "$ROOT/deploy/check.py"
