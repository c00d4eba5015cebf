#!/usr/bin/env bash
# Create .venv and install compeft with every extra. torch is pinned to the CPU build first so that
# the unpinned `torch>=2.4` requirement does not pull a multi-GB CUDA build (GPU hosts: install your
# own torch first, then run this script with COMPEFT_TORCH=skip).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
if [ "${COMPEFT_TORCH:-}" != "skip" ]; then
  .venv/bin/pip install -qq --disable-pip-version-check "torch==${COMPEFT_TORCH:-2.13.0}"
fi
.venv/bin/pip install -qq --disable-pip-version-check uv
.venv/bin/uv pip install -q --python .venv/bin/python -e ".[all,test]"
