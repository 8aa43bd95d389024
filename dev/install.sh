#!/usr/bin/env bash
# Installs the local engines, pinned and idempotent:
#  - Tansu (Apache-Kafka-compatible broker) from crates.io, with SQLite storage;
#  - chdb-core (the ClickHouse engine, in-process) from PyPI, in a project venv.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ "$(tansu --version 2>/dev/null || true)" != "tansu $TANSU_VERSION" ]]; then
  say "installing tansu $TANSU_VERSION (first time only; takes about 10 minutes on 2 cores)"
  (cd / && cargo install tansu --locked --version "$TANSU_VERSION" --features libsql)
else
  say "tansu $TANSU_VERSION present"
fi

if ! "$VENV/bin/python" -c "import chdb, sys; sys.exit(0 if chdb.__version__ == '$CHDB_VERSION' else 1)" 2>/dev/null; then
  say "installing chdb-core $CHDB_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "chdb-core==$CHDB_VERSION"
else
  say "chdb-core $CHDB_VERSION present"
fi
