#!/usr/bin/env bash
# The README's first command: set up .venv, take the bundled example catalog (a tiny Llama, its LoRA
# and (IA)3 adapters and validation tasks, made locally by examples/catalog_builder.py), then run the
# compress_catalog flow over it in-process (Prefect's ephemeral API, no server) with an SQLite
# registry, a local artifact store and a local publish directory, and print the registry table.
# One adapter (lora-plus) gets α calibrated on its validation task; the others use k=0.1, α=1; the full
# fine-tune full-color is compressed as a residual against tiny-llama (--base-for; tiny-llama itself names no
# base and is skipped with that reason).
# Output lands in ${COMPEFT_MAIN_DIR:-.compeft/main}; running it again does no new work. COMPEFT_SETUP=skip
# reuses an existing .venv (the tests do).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
step() { printf '\n==> [%3ds] %s\n' "$((SECONDS - start))" "$*"; }

if [ "${COMPEFT_SETUP:-}" = skip ] && [ -x .venv/bin/compeft ]; then
  step "using the existing .venv (COMPEFT_SETUP=skip)"
else
  step "setting up .venv (scripts/setup.sh)"
  bash scripts/setup.sh
fi

OUT="${COMPEFT_MAIN_DIR:-$PWD/.compeft/main}"
mkdir -p "$OUT"
export COMPEFT_HOME="$OUT"                  # registry.db and artifacts/ live here
export PREFECT_HOME="$OUT/prefect"          # the ephemeral API's own SQLite database
unset PREFECT_API_URL PREFECT_PROFILE       # embedded default: no server
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120 PREFECT_SERVER_ANALYTICS_ENABLED=false TQDM_DISABLE=1

step "example catalog (bundled in examples/catalog; rebuilt, ~1 minute, only if its builder changed)"
CATALOG="$(.venv/bin/python -c 'from examples.catalog_builder import example_catalog; print(example_catalog().root)' 2>"$OUT/fixtures.log")" \
  || { tail -20 "$OUT/fixtures.log" >&2; exit 1; }
echo "catalog: $CATALOG"

step "compeft catalog $CATALOG  (progress below; Prefect's ephemeral API starts first)"
.venv/bin/compeft catalog "$CATALOG" \
  --density 0.1 --alpha 1 \
  --task "lora-plus=$CATALOG/tasks/plus.yaml" --base "$CATALOG/tiny-llama" \
  --base-for "full-color=$CATALOG/tiny-llama" \
  --densities 0.1,0.3 --alphas 1,2,3,4 --limit 100 \
  --publish-to "$OUT/published"

step "registry table (compeft registry list; registry at $OUT/registry.db)"
.venv/bin/compeft registry list
step "done: artifacts in $OUT/artifacts, published copies in $OUT/published"
