#!/usr/bin/env bash
# One GPU worker: run one per GPU, pinned with CUDA_VISIBLE_DEVICES (default 0); each takes one flow
# run (a batch of adapters sharing a base model) at a time. Needs PREFECT_API_URL, and the registry /
# store / credential variables the flows read (COMPEFT_DATABASE_URL, COMPEFT_STORE, AWS_*, HF_TOKEN).
set -euo pipefail
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
export PREFECT_FLOWS_HEARTBEAT_FREQUENCY="${PREFECT_FLOWS_HEARTBEAT_FREQUENCY:-30}"
exec prefect worker start --pool gpu --type process --limit "${COMPEFT_GPU_SLOTS:-1}" \
  --name "gpu-$(hostname)-${CUDA_VISIBLE_DEVICES//,/-}" "$@"
