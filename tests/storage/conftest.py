"""Shared fixtures for tests/storage: a real SeaweedFS S3 server, PostgreSQL schemas, tiny adapters."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest
from storage_testlib import (
    HUB_TOKEN,
    PG_ENV,
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    WeedServer,
    make_adapter,
    make_artifact,
)


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> str:
    """A real SeaweedFS S3 server on 127.0.0.1 (all ports free, bound to loopback), for the session."""
    server = WeedServer(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server.start()
    finally:
        server.stop()


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
