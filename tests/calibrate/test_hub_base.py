"""`compeft calibrate --base MODEL_ID`: the base comes from a Hub (the Hub-compatible test server on
loopback, through huggingface_hub's HF_ENDPOINT) and calibrates exactly as the same base on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from compeft.calibrate.sweep import calibrate

REPO = Path(__file__).resolve().parents[2]
BASE_ID = "acme/tiny-base"
GRID = {"densities": [0.1], "alphas": [1.0, 4.0]}
LIMIT = 40


@pytest.fixture(scope="module")
def hub(catalog):
    from tests.hubserver import HubServer

    server = HubServer().start()
    server.state.add_repo(BASE_ID, {p.name: p.read_bytes() for p in catalog.base_dir.iterdir() if p.is_file()})
    yield server
    server.stop()


def run_cli(args: list[str], hub, hf_home: Path) -> subprocess.CompletedProcess:
    """The user's `compeft` command in a fresh process (HF_ENDPOINT is read when huggingface_hub is imported)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.endpoint, HF_HOME=str(hf_home), PYTHONPATH=str(REPO), TQDM_DISABLE="1")
    return subprocess.run([str(Path(sys.executable).parent / "compeft"), *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False)


def calibrate_cli(fixture, dst: Path, base: str, hub, hf_home: Path) -> subprocess.CompletedProcess:
    """`compeft calibrate FIXTURE DST --base BASE` over the test grid."""
    return run_cli(["calibrate", str(fixture.path), str(dst), "--base", base, "--task", str(fixture.task_yaml),
                    "--densities", ",".join(map(str, GRID["densities"])), "--alphas", ",".join(map(str, GRID["alphas"])),
                    "--limit", str(LIMIT), "--device", "cpu", "--quiet"], hub, hf_home)


def scores(calibration_json: Path) -> list[tuple[float, float, float]]:
    doc = json.loads(calibration_json.read_text())
    return [(p["density"], p["alpha"], p["score"]) for p in doc["points"]]


@pytest.mark.slow
def test_adapter_calibrates_against_a_hub_base(catalog, hub, tmp_path):
    fixture = catalog.adapter("ia3-next")
    done = calibrate_cli(fixture, tmp_path / "hub", BASE_ID, hub, tmp_path / "hf")
    assert done.returncode == 0, done.stderr[-2000:]
    local = calibrate(fixture.path, tmp_path / "local", base=catalog.base_dir, task=str(fixture.task_yaml),
                      search="grid", limit=LIMIT, device="cpu", **GRID)
    assert scores(tmp_path / "hub" / "calibration.json") == [(p.density, p.alpha, p.score) for p in local.points]
    assert (tmp_path / "hub" / "compeft.safetensors").read_bytes() == (tmp_path / "local" / "compeft.safetensors").read_bytes()
    assert any(BASE_ID.replace("/", "--") in str(p) for p in (tmp_path / "hf").rglob("model.safetensors"))


@pytest.mark.slow
def test_full_fine_tune_calibrates_against_a_hub_base(catalog, hub, tmp_path):
    fixture = catalog.adapter("full-color")
    done = calibrate_cli(fixture, tmp_path / "full", BASE_ID, hub, tmp_path / "hf")
    assert done.returncode == 0, done.stderr[-2000:]
    doc = json.loads((tmp_path / "full" / "calibration.json").read_text())
    assert doc["chosen"]["alpha"] in GRID["alphas"] and (tmp_path / "full" / "compeft.safetensors").is_file()


def test_unknown_hub_base_is_one_clear_line(catalog, hub, tmp_path):
    fixture = catalog.adapter("ia3-next")
    done = calibrate_cli(fixture, tmp_path / "x", "acme/no-such-model", hub, tmp_path / "hf")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "acme/no-such-model" in lines[0] and "Traceback" not in done.stderr
    assert not (tmp_path / "x").exists()
