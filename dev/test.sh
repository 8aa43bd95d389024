#!/usr/bin/env bash
# Runs every check and test: formatting, lints, unit and property tests, and
# the integration tests against the real local Kafka and ClickHouse (started
# here if they are not running, and stopped again afterwards).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

bash dev/install.sh

use_local_engines

export TRAILHOUSE_TEST_KAFKA="127.0.0.1:$KAFKA_PORT"
export TRAILHOUSE_TEST_CLICKHOUSE="http://127.0.0.1:$CLICKHOUSE_PORT"

say "the viewer: build (embedded into the query API), unit tests"
bash dev/build_ui.sh
node --test ui/tests/
say "cargo fmt --check"
cargo fmt --all --check
say "cargo build"
cargo build --workspace --all-targets --locked
say "the audit layer crate pulls no server dependencies"
bash dev/check_layer_deps.sh
say "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
say "python checks of the dev server"
python3 -m py_compile dev/clickhouse_http.py dev/demo_data.py deploy/check.py
say "helm chart: lint, render, Kubernetes schemas, values schema, checkov"
bash deploy/check.sh
say "tests"
cargo nextest run --workspace --locked --no-fail-fast
say "doctests of the audit layer crate (its published example)"
cargo test --doc -p trailhouse-layer --locked
say "benchmarks, quick mode (keeps the harness working; numbers from debug builds mean nothing)"
cargo run -q --locked -p trailhouse-bench --bin layer_overhead -- --quick
bash bench/run.sh --quick
