#!/usr/bin/env bash
# Brings the whole pipeline up on this machine: installs what is missing,
# starts Kafka and ClickHouse, migrates, starts ingest, consumer, query API
# and streamer,
# loads demo data, starts a demo portal that embeds the viewer, and prints
# ready-to-paste requests.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

bash dev/install.sh
bash dev/infra.sh start

bash dev/build_ui.sh
say "building the services"
cargo build --workspace --bins -q
BIN="$ROOT/target/debug"

# Local secrets, made once and kept in the git-ignored data folder.
if [[ ! -f "$DATA/demo.env" ]]; then
  service_key="thk_$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  cat >"$DATA/demo.env" <<ENV
SERVICE_KEY=$service_key
TRAILHOUSE_INGEST_SERVICE_KEYS=demo-gateway:$("$BIN/trailhouse-ingest" hash-key "$service_key")
TRAILHOUSE_JWT_HS256_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
TRAILHOUSE_CURSOR_SECRET=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
ENV
fi
# Added later than the others, so older data folders get it too.
if ! grep -q '^TRAILHOUSE_QUERY_VIEWER_TOKEN_SECRET=' "$DATA/demo.env"; then
  echo "TRAILHOUSE_QUERY_VIEWER_TOKEN_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$DATA/demo.env"
fi
set -a; source "$DATA/demo.env"; set +a
export TRAILHOUSE_KAFKA_BROKERS="127.0.0.1:$KAFKA_PORT"
export TRAILHOUSE_CLICKHOUSE_URL="http://127.0.0.1:$CLICKHOUSE_PORT"
export TRAILHOUSE_CLICKHOUSE_COMPRESSION=none
export TRAILHOUSE_INGEST_LISTEN="127.0.0.1:$INGEST_PORT"
export TRAILHOUSE_QUERY_LISTEN="127.0.0.1:$QUERY_PORT"
export TRAILHOUSE_CONSUMER_LISTEN="127.0.0.1:$CONSUMER_PORT"
# The demo portal (dev/portal.py) embeds the viewer from another origin.
export TRAILHOUSE_QUERY_CORS_ALLOWED_ORIGINS="http://127.0.0.1:$PORTAL_PORT"

"$BIN/trailhouse-ingest" create-topic --partitions 4
TRAILHOUSE_KAFKA_TOPIC="${TRAILHOUSE_KAFKA_TOPIC:-trailhouse.events}.dlq" "$BIN/trailhouse-ingest" create-topic --partitions 1
"$BIN/trailhouse-migrate"
start_bg ingest "$INGEST_PORT" "$BIN/trailhouse-ingest"
start_bg consumer "$CONSUMER_PORT" "$BIN/trailhouse-consumer"
# The query API reads as the dev front's read-only user (dev/infra.sh).
TRAILHOUSE_CLICKHOUSE_USER="$CLICKHOUSE_QUERY_USER" TRAILHOUSE_CLICKHOUSE_PASSWORD="$CLICKHOUSE_QUERY_PASSWORD" \
  start_bg query-api "$QUERY_PORT" "$BIN/trailhouse-query-api"

# The streamer (Streams API and delivery). Locally it may deliver to
# http://, loopback and file:// destinations; a deployment does not.
mkdir -p "$DATA/streams"
TRAILHOUSE_STREAMER_LISTEN="127.0.0.1:$STREAMER_PORT" \
TRAILHOUSE_STREAMER_ALLOW_HTTP=true TRAILHOUSE_STREAMER_ALLOW_PRIVATE=true TRAILHOUSE_STREAMER_ALLOW_LOCAL_FILES=true \
  start_bg streamer "$STREAMER_PORT" "$BIN/trailhouse-streamer"

demo_marker="$DATA/run/demo-loaded"
if [[ ! -f "$demo_marker" ]]; then
  say "loading demo data"
  python3 dev/demo_data.py --url "http://127.0.0.1:$INGEST_PORT" --key "$SERVICE_KEY"
  touch "$demo_marker"
fi

start_bg portal "$PORTAL_PORT" python3 dev/portal.py --listen "127.0.0.1:$PORTAL_PORT" --api "http://127.0.0.1:$QUERY_PORT"

# Dates inside the demo data's week, for the examples below.
day_from=$(date -u -d '3 days ago' +%Y-%m-%d)
day_to=$(date -u -d '2 days ago' +%Y-%m-%d)

token=$("$BIN/trailhouse-query-api" mint-token --org org_acme --sub demo-user --roles admin,workbench --permissions viewAuditLog)

# A local Prometheus scraping the three services every 5 s and evaluating
# the chart's alert rules (deploy/helm/trailhouse/files/alerts.yaml).
mkdir -p "$DATA/prometheus"
cp deploy/helm/trailhouse/files/alerts.yaml "$DATA/prometheus/alerts.yaml"
cat >"$DATA/prometheus/prometheus.yml" <<PROM
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files: [alerts.yaml]
scrape_configs:
  - job_name: ingest
    static_configs: [{targets: ["127.0.0.1:$INGEST_PORT"]}]
  - job_name: consumer
    static_configs: [{targets: ["127.0.0.1:$CONSUMER_PORT"]}]
  - job_name: query-api
    static_configs: [{targets: ["127.0.0.1:$QUERY_PORT"]}]
  - job_name: streamer
    static_configs: [{targets: ["127.0.0.1:$STREAMER_PORT"]}]
PROM
start_bg prometheus "$PROMETHEUS_PORT" prometheus \
  --config.file="$DATA/prometheus/prometheus.yml" \
  --storage.tsdb.path="$DATA/prometheus/data" \
  --web.listen-address="127.0.0.1:$PROMETHEUS_PORT"

cat <<MSG

Trailhouse is running:
  ingest     http://127.0.0.1:$INGEST_PORT     (logs: $DATA/logs/ingest.log)
  query API  http://127.0.0.1:$QUERY_PORT     (logs: $DATA/logs/query-api.log)
  consumer   http://127.0.0.1:$CONSUMER_PORT   (logs: $DATA/logs/consumer.log)
  streamer   http://127.0.0.1:$STREAMER_PORT   (logs: $DATA/logs/streamer.log)
  Kafka 127.0.0.1:$KAFKA_PORT, ClickHouse http://127.0.0.1:$CLICKHOUSE_PORT

The audit log viewer: http://127.0.0.1:$QUERY_PORT/ui/
  sign in with this token of org_acme (valid 24 h; kept in the tab's memory only):
  $token
  search with qualifiers, e.g.  status:4xx method:post  or  action:user.login from:$day_from
The same viewer embedded in a demo admin portal (another origin, with
short-lived viewer tokens from the portal's backend; docs/viewer.md):
  http://127.0.0.1:$PORTAL_PORT/

Metrics: each service serves /metrics, /health/live and /health/ready, e.g.
  curl -s http://127.0.0.1:$INGEST_PORT/metrics | grep trailhouse_ingest_events
Prometheus scrapes all four services with the alert rules: http://127.0.0.1:$PROMETHEUS_PORT
  (alerts: http://127.0.0.1:$PROMETHEUS_PORT/alerts; what each means: docs/runbook.md;
  the Grafana dashboard to import: deploy/helm/trailhouse/files/dashboard.json)

Send an event:
  curl -s -X POST http://127.0.0.1:$INGEST_PORT/v1/events \\
    -H 'Authorization: Bearer $SERVICE_KEY' -H 'Content-Type: application/json' \\
    -d '{"org_id":"org_acme","actor":{"type":"user","id":"usr_1"},"action":{"type":"user.login"}}'

Read org_acme's newest events (token valid 24 h):
  TOKEN=$token
  curl -s "http://127.0.0.1:$QUERY_PORT/v1/events?limit=5" -H "Authorization: Bearer \$TOKEN"
  curl -s "http://127.0.0.1:$QUERY_PORT/v1/events?from=${day_from}T00:00:00Z&to=${day_to}T00:00:00Z&order=asc&limit=2" -H "Authorization: Bearer \$TOKEN"

Stream org_acme's logins to NDJSON.gz files in $DATA/streams, starting
with the stored events of the last day (the same token; docs/streams.md):
  curl -s -X POST http://127.0.0.1:$STREAMER_PORT/v1/streams -H "Authorization: Bearer \$TOKEN" \
    -H 'Content-Type: application/json' \
    -d '{"name":"logins","filter":"action=user.login","destination":{"type":"object_store","url":"file://$DATA/streams"},"start_from":"'"$(date -u -d '1 day ago' +%Y-%m-%dT%H:%M:%SZ)"'"}'
  curl -s http://127.0.0.1:$STREAMER_PORT/v1/streams -H "Authorization: Bearer \$TOKEN"

Stop everything: dev/down.sh
MSG
