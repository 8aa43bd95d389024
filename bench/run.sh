#!/usr/bin/env bash
# The pipeline benchmark in one command: installs and starts the local engines
# if needed, builds the services, runs every section and writes
# results.md, results.json and PNG plots.
#
#   bash bench/run.sh            full run (release build), results in docs/bench/
#   bash bench/run.sh --quick    a few minutes; keeps the harness working in CI
#
# Further arguments go to the benchmark binary (e.g. --only query).
source "$(dirname "${BASH_SOURCE[0]}")/../dev/lib.sh"
cd "$ROOT"

quick=0
for a in "$@"; do [[ $a == --quick ]] && quick=1; done
if [[ $quick == 1 ]]; then
  # Debug binaries, as the test command builds them: the quick run checks
  # the harness, its numbers are not for comparison.
  profile=debug; build=(cargo build --locked -q -p trailhouse-ingest -p trailhouse-consumer -p trailhouse-query-api -p trailhouse-streamer -p trailhouse-bench --bins)
  out="$ROOT/bench/results/tmp/quick"
else
  profile=release; build=(cargo build --release --locked -q -p trailhouse-ingest -p trailhouse-consumer -p trailhouse-query-api -p trailhouse-streamer -p trailhouse-bench --bins)
  out="$ROOT/docs/bench"
fi

bash dev/install.sh
use_local_engines
# Throughput figures use a broker of their own, the in-memory Tansu build:
# the durable one's fetch cost grows with the backlog (docs/benchmarks.md).
BENCH_KAFKA_PORT="${TRAILHOUSE_BENCH_KAFKA_PORT:-19094}"
mkdir -p "$DATA/bench-kafka"
start_bg bench-kafka "$BENCH_KAFKA_PORT" env -C "$DATA/bench-kafka" -u OTEL_EXPORTER_OTLP_ENDPOINT \
  "$MEMORY_TANSU" broker --listener-url "tcp://127.0.0.1:$BENCH_KAFKA_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$BENCH_KAFKA_PORT" --storage-engine "memory://tansu/"
trap 'stop_bg bench-kafka; [[ -n "${STARTED_ENGINES:-}" ]] && bash "$ROOT/dev/infra.sh" stop || true' EXIT

say "building ($profile)"
"${build[@]}"
mkdir -p "$out"
# Freshness is a latency: it runs on the broker the tests trust (the local
# one, durable unless TRAILHOUSE_DEV_BROKER=memory), whose high watermarks
# and long polls behave as Kafka's do.
if [[ "${TRAILHOUSE_DEV_BROKER:-durable}" == memory ]]; then
  fresh_broker="the local in-memory broker"
else
  fresh_broker="the durable local broker (Tansu 0.6.0 on SQLite)"
fi
# Full runs give ClickHouse a CPU of its own in the consumer section, as on
# separate hosts (docs/benchmarks.md); quick runs leave every CPU shared.
pin=()
if [[ $quick == 0 && $(nproc) -ge 2 ]]; then pin=(--pin-clickhouse); fi
"$ROOT/target/$profile/pipeline" "${pin[@]}" --bin-dir "$ROOT/target/$profile" --out "$out" \
  --kafka "127.0.0.1:$BENCH_KAFKA_PORT" --clickhouse "http://127.0.0.1:$CLICKHOUSE_PORT" \
  --broker-pid "$(cat "$DATA/run/bench-kafka.pid")" --clickhouse-pid "$(cat "$DATA/run/clickhouse.pid")" \
  --fresh-kafka "127.0.0.1:$KAFKA_PORT" --fresh-broker "$fresh_broker" "$@"

say "broker on its own"
if [[ $quick == 1 ]]; then broker_args=(--quick); else broker_args=(); fi
"$ROOT/target/$profile/broker" --kafka "127.0.0.1:$BENCH_KAFKA_PORT" "${broker_args[@]}" | tee "$out/broker.md"

say "cost per event, per stage (callgrind)"
if ! command -v valgrind >/dev/null; then
  say "installing valgrind (Debian package)"
  sudo=(); [[ $(id -u) == 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get install -y -q valgrind >/dev/null 2>&1 ||
    { "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" apt-get install -y -q valgrind >/dev/null; } ||
    die "could not install valgrind"
fi
if [[ $quick == 1 ]]; then stage_args=(--events 1000 --native-factor 2); else stage_args=(); fi
"$ROOT/target/$profile/stages" report --kafka "127.0.0.1:$BENCH_KAFKA_PORT" \
  --clickhouse "http://127.0.0.1:$CLICKHOUSE_PORT" --work "$ROOT/bench/results/tmp/callgrind" \
  "${stage_args[@]}" | tee "$out/stages.md"

if ! "$VENV/bin/python" -c "import matplotlib" 2>/dev/null; then
  say "installing matplotlib into $VENV (for the plots)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "matplotlib==3.10.7"
fi
"$VENV/bin/python" bench/plot.py "$out/results.json" "$out"

say "codec stages"
if [[ $quick == 1 ]]; then codec_args=(--quick); else codec_args=(); fi
"$ROOT/target/$profile/codec" "${codec_args[@]}" | tee "$out/codec.md"

say "the local ClickHouse front against its engine"
if [[ $quick == 1 ]]; then front_args=(--quick); else front_args=(); fi
"$ROOT/target/$profile/front" --clickhouse "http://127.0.0.1:$CLICKHOUSE_PORT" --python "$VENV/bin/python" \
  "${front_args[@]}" | tee "$out/front.md"

say "storage layouts"
# Full runs load 300,000 events per layout and stop a load after 3 minutes
# (the org-day layout at 10,000 orgs writes that many parts per batch).
if [[ $quick == 1 ]]; then layout_args=(--quick --orgs 10,1000); else layout_args=(--events 300000 --load-budget-secs 180); fi
"$ROOT/target/$profile/layouts" --clickhouse "http://127.0.0.1:$CLICKHOUSE_PORT" "${layout_args[@]}" | tee "$out/layouts.md"
say "streams: delivery rate with 1, 100 and 1,000 streams, and latency"
if [[ $quick == 1 ]]; then streams_args=(--quick); else streams_args=(); fi
"$ROOT/target/$profile/streams" --bin-dir "$ROOT/target/$profile" --kafka "127.0.0.1:$BENCH_KAFKA_PORT" \
  --clickhouse "http://127.0.0.1:$CLICKHOUSE_PORT" "${streams_args[@]}" | tee "$out/streams.md"
say "results in $out"
