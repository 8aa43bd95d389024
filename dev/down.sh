#!/usr/bin/env bash
# Stops the services and the local engines (data stays in the data folder).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
for s in portal prometheus streamer ingest consumer query-api; do stop_bg "$s"; done
bash "$ROOT/dev/infra.sh" stop
