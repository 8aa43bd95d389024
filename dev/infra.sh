#!/usr/bin/env bash
# Local Kafka (Tansu) and ClickHouse (chdb behind a ClickHouse HTTP server).
# Usage: dev/infra.sh start|stop|status
# TRAILHOUSE_DEV_BROKER=durable (default: Tansu 0.6.0 on SQLite) or memory
# (the in-memory Tansu build: fast, keeps nothing across a restart).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start() {
  mkdir -p "$DATA/kafka" "$DATA/clickhouse"
  local tansu=(tansu) storage="sqlite://tansu.db"
  if [[ $BROKER == memory ]]; then
    [[ -x "$MEMORY_TANSU" ]] || die "the in-memory broker is not installed; run: bash dev/install.sh"
    tansu=("$MEMORY_TANSU") storage="memory://tansu/"
  fi
  # Tansu reads OTEL_EXPORTER_OTLP_ENDPOINT too; keep its telemetry local.
  start_bg kafka "$KAFKA_PORT" env -C "$DATA/kafka" -u OTEL_EXPORTER_OTLP_ENDPOINT "${tansu[@]}" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine "$storage"
  start_bg clickhouse "$CLICKHOUSE_PORT" "$VENV/bin/python" "$ROOT/dev/clickhouse_http.py" \
    --port "$CLICKHOUSE_PORT" --path "$DATA/clickhouse/data" \
    --readonly-user "$CLICKHOUSE_QUERY_USER:$CLICKHOUSE_QUERY_PASSWORD"
}

status() {
  local name port
  for name in kafka clickhouse; do
    port=$([[ $name == kafka ]] && echo "$KAFKA_PORT" || echo "$CLICKHOUSE_PORT")
    if pid_alive "$name" && port_open "$port"; then echo "$name: running on 127.0.0.1:$port"; else echo "$name: stopped"; fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop_bg clickhouse; stop_bg kafka ;;
  status) status ;;
  *) die "usage: dev/infra.sh start|stop|status" ;;
esac
