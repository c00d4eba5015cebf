"""Flow tests run against one throwaway Prefect API per session (prefect_test_harness, SQLite)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from tests.flows.catalogs import make_catalog


@pytest.fixture(scope="session")
def prefect_api():
    """A Prefect API for the whole session (startup takes 20-30 s; the default 30 s is too tight)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def service(tmp_path: Path):
    """Registry, artifact store and publish directory of one test."""
    from flows.params import ServiceParameters

    return ServiceParameters(database_url=f"sqlite:///{tmp_path / 'registry.db'}", store=str(tmp_path / "store"),
                         publish_to=str(tmp_path / "published"))


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return make_catalog(tmp_path / "catalog", n=3)
