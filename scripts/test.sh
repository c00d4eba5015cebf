#!/usr/bin/env bash
# Set up .venv and run the whole test suite (GPU tests skip without CUDA).
# In CI (CI=true, root, apt-get) headless Chromium is installed first if missing, so the offline /docs test
# really renders the page (about 80 s and 350 MB the first time); elsewhere that test skips and says why.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "${CI:-}" = "true" ] && ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
    >/tmp/compeft-chromium-install.log 2>&1 || echo "scripts/test.sh: chromium not installed (see /tmp/compeft-chromium-install.log)" >&2
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
