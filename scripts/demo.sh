#!/usr/bin/env bash
# Set up .venv, build a tiny LoRA adapter locally, then compress, inspect and decompress it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m compeft.demo "${1:-.compeft/demo}"
