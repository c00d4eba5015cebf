#!/usr/bin/env bash
# The CPU worker: runs the catalog flows (crawl, plan, submit batches to the gpu pool, summarise).
set -euo pipefail
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY="${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-30}"
exec prefect worker start --pool cpu --type process --limit "${COMPEFT_CPU_SLOTS:-4}" --name "cpu-$(hostname)" "$@"
