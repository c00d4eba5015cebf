#!/usr/bin/env bash
# One-shot setup against a running stack (docker-compose's `setup` service runs exactly this):
# registry migrations, the artifact bucket, work pools + lost-worker automation, deployments.
set -euo pipefail
cd "${COMPEFT_ROOT:-$(dirname "$0")/..}"
compeft db upgrade
if [[ "${COMPEFT_STORE:-}" == s3://* ]]; then
  python - <<'PY'
import os
from storage.s3client import make_s3_client
bucket = os.environ["COMPEFT_STORE"][5:].split("/", 1)[0]
client = make_s3_client(os.environ.get("AWS_ENDPOINT_URL"))
if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
    client.create_bucket(Bucket=bucket)
print(f"bucket {bucket} ready")
PY
fi
: "${COMPEFT_BULK_SOURCE:?set COMPEFT_BULK_SOURCE: the catalog the nightly bulk deployment compresses}"
python deployments/bootstrap.py --lost-after "${COMPEFT_LOST_AFTER:-300}"
COMPEFT_ROOT="${COMPEFT_ROOT:-$PWD}" COMPEFT_BULK_CRON="${COMPEFT_BULK_CRON:-0 3 * * *}" \
  prefect --no-prompt deploy --all --prefect-file deployments/prefect.yaml
