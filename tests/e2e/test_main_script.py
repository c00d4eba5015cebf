"""The README's first command as a user runs it: ``bash scripts/main.sh`` (reusing this .venv) on the bundled
example catalog, with Prefect's ephemeral API. A successful run prints no traceback and no dependency warning,
says what it is doing (a line per calibration point), and ends with the registry table."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.e2e.stack import REPO

pytestmark = pytest.mark.slow


def test_main_script_output_is_quiet_and_honest(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "COMPEFT_"))}
    env.update(COMPEFT_MAIN_DIR=str(tmp_path / "main"), COMPEFT_SETUP="skip")
    done = subprocess.run(["bash", "scripts/main.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
                          check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    for noise in ("Traceback", "database is locked", "Warning:", "warnings.warn", "docs.prefect.io",
                  "`pretrained` model kwarg", "Engine execution exited"):
        assert noise not in out, f"{noise!r} in the output of scripts/main.sh:\n{out[-4000:]}"
    assert re.search(r"lora-plus: calibrating: k=[\d.]+ α=[\d.]+: acc = [\d.]+", out)  # a line per calibration point
    assert re.search(r"\d+ compressed, 0 existing, \d+ skipped, 0 failed", out)
    assert re.search(r"lora-plus +compressed", out) and "1.000 → 1.000" in out
    listing = out[out.index("registry table"):]
    assert "catalog:tiny-llama" in listing and "../tiny-llama" not in listing  # base models named one way
