"""Query interfaces: `compeft registry list/show`, `compeft db upgrade`, and the HTTP API over real HTTP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from storage_testlib import adapter_record, artifact_record, free_port

from storage.cli import db_main, registry_main
from storage.errors import NotFoundError, RegistryError
from storage.registry import CalibrationRecord, open_registry

REPO_ROOT = Path(__file__).resolve().parents[2]


def seed(url: str) -> list[int]:
    """Three artifacts: two LORA on m/a (ratios 8 and 20), one IA3 on m/b (ratio 30)."""
    ids = []
    with open_registry(url, upgrade=True) as registry:
        for n, (base, kind, ratio) in enumerate([("m/a", "LORA", 8.0), ("m/a", "LORA", 20.0), ("m/b", "IA3", 30.0)]):
            adapter = registry.get_or_create_adapter(adapter_record(n, base_model=base, peft_type=kind))
            art, _ = registry.get_or_create_artifact(adapter.id, artifact_record(n, ratio=ratio))
            ids.append(art.id)
        registry.add_calibration(ids[0], CalibrationRecord(
            task="synthetic", metric="acc", scores=({"density": 0.1, "alpha": 1.0, "score": 0.9},),
            chosen_density=0.1, chosen_alpha=1.0, chosen_score=0.9, original_score=0.95))
        registry.get_or_create_publication(ids[0], "hf://acme", "hf://acme/adapter-0-compeft@abc", "abc")
    return ids


def test_registry_list_and_show_cli(database_url, capsys):
    ids = seed(database_url)
    assert registry_main(["list", "--json", "--database-url", database_url]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["total"] == 3 and [i["id"] for i in listing["items"]] == ids[::-1]
    assert registry_main(["list", "--json", "--base-model", "m/a", "--min-ratio", "10", "--database-url", database_url]) == 0
    assert [i["id"] for i in json.loads(capsys.readouterr().out)["items"]] == [ids[1]]
    assert registry_main(["list", "--peft-type", "ia3", "--database-url", database_url]) == 0
    table = capsys.readouterr().out
    assert "IA3" in table and "m/b" in table and "(1 of 1 artifacts)" in table
    assert registry_main(["show", str(ids[0]), "--json", "--database-url", database_url]) == 0
    detail = json.loads(capsys.readouterr().out)
    assert detail["calibrations"][0]["original_score"] == 0.95
    assert detail["publications"][0]["uri"] == "hf://acme/adapter-0-compeft@abc"
    assert registry_main(["show", str(ids[0]), "--database-url", database_url]) == 0
    text = capsys.readouterr().out
    assert "calibration synthetic/acc" in text and "published   hf://acme/adapter-0-compeft@abc" in text
    with pytest.raises(NotFoundError, match="artifact 999 not found"):
        registry_main(["show", "999", "--database-url", database_url])


def test_db_upgrade_cli_and_unmigrated_postgres(postgres_url, capsys):
    with pytest.raises(RegistryError, match="compeft db upgrade"):
        registry_main(["list", "--database-url", postgres_url])
    assert db_main(["upgrade", "--database-url", postgres_url]) == 0
    from storage.registry.db import head_revision

    assert f"at migration {head_revision()} (head)" in capsys.readouterr().out
    assert registry_main(["list", "--database-url", postgres_url]) == 0
    assert "(0 of 0 artifacts)" in capsys.readouterr().out


def _compeft(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compeft.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_through_the_compeft_command(tmp_path):
    env = dict(os.environ, COMPEFT_HOME=str(tmp_path / "home"))
    env.pop("COMPEFT_DATABASE_URL", None)
    result = _compeft("db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "home" / "registry.db").is_file()
    seed(f"sqlite:///{tmp_path / 'home' / 'registry.db'}")
    result = _compeft("registry", "show", "12345", env=env)
    assert result.returncode == 2 and result.stderr.strip() == "compeft: error: artifact 12345 not found in the registry"


@pytest.fixture
def api_server(sqlite_url):
    """The FastAPI app served by a real uvicorn on a free loopback port."""
    import uvicorn

    from storage.api import create_app

    ids = seed(sqlite_url)
    registry = open_registry(sqlite_url)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(registry), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", ids
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        registry.close()


def test_http_api(api_server):
    base, ids = api_server
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/health").json() == {"status": "ok"}
        page = client.get("/artifacts", params={"limit": 2}).json()
        assert page["total"] == 3 and len(page["items"]) == 2 and page["items"][0]["id"] == ids[2]
        rest = client.get("/artifacts", params={"limit": 2, "offset": 2}).json()
        assert [i["id"] for i in rest["items"]] == [ids[0]]
        filtered = client.get("/artifacts", params={"base_model": "m/a", "min_ratio": 10}).json()
        assert [i["id"] for i in filtered["items"]] == [ids[1]]
        assert client.get("/artifacts", params={"peft_type": "lora"}).json()["total"] == 2
        detail = client.get(f"/artifacts/{ids[0]}").json()
        assert detail["adapter"]["base_model"] == "m/a" and detail["calibrations"][0]["task"] == "synthetic"
        assert client.get("/artifacts/9999").status_code == 404
        assert client.get("/artifacts", params={"limit": 0}).status_code == 422
        assert client.get("/artifacts", params={"offset": 1 << 63}).status_code == 422
        assert client.get("/artifacts", params={"base_model": "a\x00b"}).status_code == 422
        assert client.get(f"/artifacts/{1 << 63}").status_code == 422
        assert client.post("/artifacts", json={}).status_code == 405  # read-only
        spec = client.get("/openapi.json").json()
        census = client.get("/census").json()
        assert (census["adapters"], census["families"], census["base_models"]) == (3, {"LORA": 2, "IA3": 1},
                                                                                   {"m/a": 2, "m/b": 1})
        assert (census["bytes_before"], census["bytes_after"], census["ratio"]) == (12000, 1200, 10.0)
        assert {"/health", "/artifacts", "/artifacts/{artifact_id}", "/census"} <= set(spec["paths"])
        assert {"ArtifactPage", "ArtifactDetail", "Calibration"} <= set(spec["components"]["schemas"])
        assert set(spec["paths"]["/artifacts"]) == {"get"}
        assert client.get("/docs").status_code == 200


def test_registry_serve_command(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    seed(url)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "compeft.cli", "registry", "serve", "--port", str(port),
                             "--database-url", url], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/artifacts", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(proc.stdout.read().decode()) from None
                time.sleep(0.1)
        assert response.json()["total"] == 3
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _browser() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.parametrize(("page", "rendered"), [
    ("/docs", ('class="swagger-ui', 'class="opblock-summary-path"', "/artifacts/{artifact_id}", "ArtifactDetail")),
    ("/redoc", ('class="redoc-json"', "List Artifacts", "/artifacts/{artifact_id}", "min_ratio")),
])
def test_api_docs_render_offline_in_a_browser(api_server, tmp_path, page, rendered):
    """/docs and /redoc render in headless Chromium with every host but 127.0.0.1 unreachable: their scripts and
    styles come from the registry server itself (fastapi-offline), not a CDN."""
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium: apt-get install chromium (scripts/test.sh installs it when CI=true)")
    base, _ = api_server
    html = httpx.get(base + page, timeout=10).text
    assert "cdn." not in html and "https://" not in html.split("<body", 1)[0]
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                           "--virtual-time-budget=15000", "--dump-dom", base + page],
                          capture_output=True, text=True, timeout=120, check=False)
    dom = done.stdout
    missing = [r for r in rendered if r not in dom]
    assert not missing, f"{page} did not render {missing} (exit {done.returncode}): {done.stderr[-1500:]}"
