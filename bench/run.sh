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
  profile=debug; build=(cargo build --locked -q -p trailhouse-ingest -p trailhouse-consumer -p trailhouse-query-api -p trailhouse-bench --bins)
  out="$ROOT/bench/results/tmp/quick"
else
  profile=release; build=(cargo build --release --locked -q -p trailhouse-ingest -p trailhouse-consumer -p trailhouse-query-api -p trailhouse-bench --bins)
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
"$ROOT/target/$profile/pipeline" --bin-dir "$ROOT/target/$profile" --out "$out" \
  --kafka "127.0.0.1:$BENCH_KAFKA_PORT" --clickhouse "http://127.0.0.1:$CLICKHOUSE_PORT" "$@"

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
if [[ $quick == 1 ]]; then layout_args=(--quick --orgs 10,1000); else layout_args=(); fi
"$ROOT/target/$profile/layouts" --clickhouse "http://127.0.0.1:$CLICKHOUSE_PORT" "${layout_args[@]}" | tee "$out/layouts.md"
say "results in $out"
