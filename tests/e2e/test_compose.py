"""docker-compose.yml: valid for a compose client where one exists, runs the same commands as these
tests, and refuses to start without the passwords from .env (no secrets in the file)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.stack import REPO

COMPOSE = REPO / "docker-compose.yml"
SECRETS = {"POSTGRES_PASSWORD": "pw", "MINIO_ROOT_USER": "user", "MINIO_ROOT_PASSWORD": "pw2"}


def _compose_cmd() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True, check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def _config(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = _compose_cmd()
    if cmd is None:
        pytest.skip("no docker compose client (docker compose or docker-compose) installed")
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", **env_extra}
    return subprocess.run([*cmd, "-f", str(COMPOSE), "config"], capture_output=True, text=True, env=env, cwd=REPO, check=False)


def test_compose_config_is_valid():
    done = _config(SECRETS)
    assert done.returncode == 0, done.stderr
    services = yaml.safe_load(done.stdout)["services"]
    assert set(services) == {"postgres", "minio", "prefect-server", "setup", "worker-cpu", "worker-gpu", "registry-api"}
    gpu = services["worker-gpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "postgresql+asyncpg://" in services["prefect-server"]["environment"]["PREFECT_SERVER_DATABASE_CONNECTION_URL"]


def test_compose_refuses_to_run_without_passwords():
    done = _config({})
    assert done.returncode != 0 and "POSTGRES_PASSWORD" in done.stderr


def test_compose_runs_the_commands_the_tests_run():
    spec = yaml.safe_load(COMPOSE.read_text())["services"]
    assert spec["worker-cpu"]["command"] == ["bash", "deployments/worker-cpu.sh"]
    assert spec["worker-gpu"]["command"] == ["bash", "deployments/worker-gpu.sh"]
    assert spec["setup"]["command"] == ["bash", "deployments/setup.sh"]
    for script in ("worker-cpu.sh", "worker-gpu.sh", "setup.sh", "bootstrap.py", "prefect.yaml", "Dockerfile"):
        assert (REPO / "deployments" / script).is_file()
    text = COMPOSE.read_text()
    for secret in SECRETS.values():
        assert f": {secret}" not in text


def test_compose_file_matches_the_compose_spec(tmp_path):
    """Offline, with no compose client: the file against the Compose Specification's JSON schema."""
    checker = Path(sys.executable).parent / "check-jsonschema"
    if not checker.exists():
        pytest.skip("check-jsonschema is not installed (pip install -e .[test])")
    done = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    command:", "    commandd:", 1))
    done = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(broken)],
                          capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "commandd" in done.stdout + done.stderr
