#!/usr/bin/env bash
# Checks that the audit layer crate stays light: with default features its
# normal dependencies include no Kafka client, ClickHouse client, CLI parser
# or OTLP exporter, and no Trailhouse crate but trailhouse-schemas. Also checks
# that the `kafka` feature does pull in rdkafka, so that the check itself can
# tell the two apart.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

# Crate names (not versions) that must not appear with default features.
FORBIDDEN='^(rdkafka|rdkafka-sys|clickhouse|clickhouse-[a-z-]+|clap|clap_[a-z_]+|opentelemetry-otlp)$'

# crates ARGS...: the distinct crate names in the layer's normal dependency tree.
crates() {
  cargo tree -p trailhouse-layer -e normal --locked --prefix none --format '{p}' "$@" |
    awk '{print $1}' | sort -u
}

say "trailhouse-layer: dependencies with default features"
default_crates="$(crates)" || die "cargo tree failed for trailhouse-layer"
forbidden="$(grep -E "$FORBIDDEN" <<<"$default_crates" || true)"
if [[ -n "$forbidden" ]]; then
  for name in $forbidden; do
    printf 'error: trailhouse-layer (default features) depends on %s; how:\n' "$name" >&2
    cargo tree -p trailhouse-layer -e normal --locked --invert "$name" >&2 || true
  done
  die "trailhouse-layer must not pull in rdkafka, clickhouse, clap or opentelemetry-otlp without features"
fi
trailhouse="$(grep -E '^trailhouse-' <<<"$default_crates" | grep -vxE 'trailhouse-(layer|schemas)' || true)"
if [[ -n "$trailhouse" ]]; then
  die "trailhouse-layer (default features) depends on $(tr '\n' ' ' <<<"$trailhouse"); only trailhouse-schemas is allowed"
fi
echo "ok: $(wc -l <<<"$default_crates") crates, none of them forbidden"

say "trailhouse-layer: dependencies with --features kafka"
kafka_crates="$(crates --features kafka)" || die "cargo tree failed for trailhouse-layer --features kafka"
grep -qx rdkafka <<<"$kafka_crates" ||
  die "trailhouse-layer --features kafka does not list rdkafka: the check above cannot see a Kafka dependency"
echo "ok: rdkafka appears with the kafka feature"
