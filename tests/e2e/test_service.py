"""The service end to end on loopback: deployments from prefect.yaml on a real Prefect server, real
process workers per pool, runs triggered through the API with parameters, a real S3 server and the
Hub test server; registry rows, stored artifacts, Prefect artifacts and published copies checked;
re-runs add nothing; a killed GPU worker loses and duplicates nothing; the cron deployment is scheduled.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.adapters import lora_adapter
from tests.flows.catalogs import make_catalog

pytestmark = pytest.mark.slow


def registry_rows(database_url: str, uri_prefix: str) -> dict[str, list]:
    """Artifacts and publications of the adapters whose URI starts with uri_prefix."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            arts = conn.execute(text(
                "SELECT a.id, d.uri, a.sha256, a.storage_uri, a.options_hash FROM artifacts a "
                "JOIN adapters d ON d.id = a.adapter_id WHERE d.uri LIKE :p ORDER BY d.uri"), {"p": uri_prefix + "%"}).all()
            pubs = conn.execute(text(
                "SELECT p.artifact_id, p.destination, p.uri FROM publications p JOIN artifacts a ON a.id = p.artifact_id "
                "JOIN adapters d ON d.id = a.adapter_id WHERE d.uri LIKE :p"), {"p": uri_prefix + "%"}).all()
    finally:
        engine.dispose()
    return {"artifacts": [tuple(r) for r in arts], "publications": [tuple(r) for r in pubs]}


def catalog_params(source: str, publish_to: str | None = None, **extra) -> dict:
    return {"source": source, "service": {"publish_to": publish_to}, "batch_size": 8, **extra}


def test_on_demand_run_compresses_registers_stores_and_publishes(e2e):
    catalog = make_catalog(e2e.root / "local-catalog", n=3)
    published = e2e.root / "published"
    run_id = e2e.stack.trigger("compress-catalog/on-demand", catalog_params(str(catalog), str(published)))
    run = e2e.stack.wait(run_id)
    assert run["state_type"] == "COMPLETED", e2e.stack.logs_tail()
    assert run["work_pool_name"] == "cpu"

    rows = registry_rows(e2e.database_url, str(catalog))
    assert [Path(uri).name for _, uri, *_ in rows["artifacts"]] == ["lora-0", "lora-1", "lora-2"]
    for _, uri, _sha, storage_uri, _ in rows["artifacts"]:
        stored = Path(storage_uri)
        assert stored.is_relative_to(e2e.root / "store") and (stored / "compeft.safetensors").is_file()
        copy = published / Path(uri).name / "compeft.safetensors"
        assert copy.read_bytes() == (stored / "compeft.safetensors").read_bytes()
    assert len(rows["publications"]) == 3 and {d for _, d, _ in rows["publications"]} == {str(published)}

    children = e2e.stack.gpu_runs(run_id)  # one batch per base model: base-a (lora-0, lora-2, broken), base-b
    assert len(children) == 2 and all(c["work_pool_name"] == "gpu" and c["state_type"] == "COMPLETED" for c in children)
    table = {r["name"]: r for r in e2e.stack.table(run_id)}
    assert {n: r["status"] for n, r in table.items()} == {
        "lora-0": "compressed", "lora-1": "compressed", "lora-2": "compressed", "lora-broken": "failed",
        "lora-pickle": "skipped", "base-model": "skipped"}
    assert "safetensors" in table["lora-broken"]["reason"] and "pickle" in table["lora-pickle"]["reason"]
    assert table["lora-0"]["bytes_artifact"] < table["lora-0"]["bytes_source"] and table["lora-0"]["ratio"] > 1
    words = {r["Adapter"]: r for r in e2e.stack.table(run_id, "compeft-outcomes")}
    assert words["lora-0"]["Status"] == "compressed" and words["lora-0"]["Ratio"].endswith("×")
    artifacts = e2e.stack.artifacts(run_id)
    [progress] = [a for a in artifacts if a["type"] == "progress"]
    assert float(progress["data"]) == pytest.approx(100.0) and progress["description"].startswith("done: 3 compressed")
    index = next(a for a in artifacts if a["key"] == "compeft-run-index")["data"]  # every batch run linked
    assert all(f"/runs/flow-run/{c['id']}" in index for c in children)

    # re-running the same catalog does no new work and adds no rows: the done adapters are planned
    # away in the catalog flow; only the failed one is tried again (and fails again, alone)
    again_id = e2e.stack.trigger("compress-catalog/on-demand", catalog_params(str(catalog), str(published)))
    assert e2e.stack.wait(again_id)["state_type"] == "COMPLETED"
    [retry] = e2e.stack.gpu_runs(again_id)
    assert [r["name"] for r in e2e.stack.table(retry["id"])] == ["lora-broken"]
    assert registry_rows(e2e.database_url, str(catalog)) == rows
    statuses = {r["name"]: r["status"] for r in e2e.stack.table(again_id)}
    assert [statuses[f"lora-{i}"] for i in range(3)] == ["existing"] * 3 and statuses["lora-broken"] == "failed"


def test_s3_and_hub_catalogs_publish_back_to_each_other(e2e):
    s3 = e2e.s3()
    bucket = "catalog"
    s3.create_bucket(Bucket=bucket)
    local = e2e.root / "for-s3"
    for i in range(2):
        d = lora_adapter(local / f"s3-lora-{i}", seed=100 + i)
        for f in d.iterdir():
            s3.upload_file(str(f), bucket, f"adapters/{d.name}/{f.name}")
    for i in range(2):
        d = lora_adapter(e2e.root / "for-hub" / f"hub-lora-{i}", seed=200 + i)
        e2e.hub.state.add_repo(f"alice/hub-lora-{i}", {f.name: f.read_bytes() for f in d.iterdir()}, tags=["peft"])

    from_s3 = e2e.stack.trigger("compress-catalog/on-demand", catalog_params(f"s3://{bucket}/adapters", "hf://acme"))
    from_hub = e2e.stack.trigger("compress-catalog/on-demand", catalog_params("hf://alice", f"s3://{bucket}/compressed"))
    for run_id in (from_s3, from_hub):
        assert e2e.stack.wait(run_id)["state_type"] == "COMPLETED", e2e.stack.logs_tail()

    s3_rows = registry_rows(e2e.database_url, f"s3://{bucket}/adapters")
    assert len(s3_rows["artifacts"]) == 2 and len(s3_rows["publications"]) == 2
    for i in range(2):
        repo = e2e.hub.state.repos[f"acme/s3-lora-{i}-compeft"]
        assert "compeft.safetensors" in repo.head.files and "README.md" in repo.head.files
    hub_rows = registry_rows(e2e.database_url, "hf://alice/")
    assert len(hub_rows["artifacts"]) == 2 and len(hub_rows["publications"]) == 2
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="compressed/")["Contents"]}
    assert {f"compressed/hub-lora-{i}/compeft.safetensors" for i in range(2)} <= keys
    for run_id in (from_s3, from_hub):
        assert {r["status"] for r in e2e.stack.table(run_id)} == {"compressed"}
    commits_before = {name: len(r.commits) for name, r in e2e.hub.state.repos.items()}
    again = e2e.stack.trigger("compress-catalog/on-demand", catalog_params(f"s3://{bucket}/adapters", "hf://acme"))
    assert e2e.stack.wait(again)["state_type"] == "COMPLETED"
    assert e2e.stack.gpu_runs(again) == []  # known (uri, ETags) -> registered content: nothing dispatched
    assert {r["status"] for r in e2e.stack.table(again)} == {"existing"}
    assert registry_rows(e2e.database_url, f"s3://{bucket}/adapters") == s3_rows
    assert {name: len(r.commits) for name, r in e2e.hub.state.repos.items()} == commits_before


def test_killed_gpu_worker_loses_and_duplicates_nothing(e2e):
    catalog = e2e.root / "kill-catalog"
    for i in range(6):
        lora_adapter(catalog / f"big-{i}", seed=300 + i, hidden=384, rank=16)
    published = e2e.root / "kill-published"
    run_id = e2e.stack.trigger("compress-catalog/on-demand", catalog_params(str(catalog), str(published)))
    deadline = time.monotonic() + 300
    while not registry_rows(e2e.database_url, str(catalog))["artifacts"]:
        assert time.monotonic() < deadline, e2e.stack.logs_tail()
        time.sleep(0.05)
    e2e.stack.workers["gpu"].stop(signal.SIGKILL)  # the worker and its flow-run process, mid-batch
    done_at_kill = len(registry_rows(e2e.database_url, str(catalog))["artifacts"])
    [first] = e2e.stack.gpu_runs(run_id)
    # RUNNING until the automation marks it lost; CRASHED already when the orphaned run process died on its closed pipe
    assert done_at_kill < 6 and first["state_type"] in ("RUNNING", "CRASHED"), "the kill came too late to test anything"
    e2e.stack.start_worker("gpu")

    run = e2e.stack.wait(run_id, timeout=400)
    assert run["state_type"] == "COMPLETED", e2e.stack.logs_tail()
    children = sorted(e2e.stack.gpu_runs(run_id), key=lambda c: c["name"])
    assert [c["name"] for c in children] == ["batch-0-try-0", "batch-0-try-1"]
    assert [c["state_type"] for c in children] == ["CRASHED", "COMPLETED"]
    rows = registry_rows(e2e.database_url, str(catalog))
    assert sorted(Path(uri).name for _, uri, *_ in rows["artifacts"]) == [f"big-{i}" for i in range(6)]
    assert len({sha for _, _, sha, _, _ in rows["artifacts"]}) == 6 and len(rows["publications"]) == 6
    for _, uri, _, storage_uri, _ in rows["artifacts"]:
        assert (Path(storage_uri) / "compeft.safetensors").read_bytes() == \
            (published / Path(uri).name / "compeft.safetensors").read_bytes()
    statuses = [r["status"] for r in e2e.stack.table(run_id)]
    assert len(statuses) == 6 and set(statuses) <= {"compressed", "existing"} and "failed" not in statuses


def test_cron_deployment_gets_runs_scheduled(e2e):
    deployment = e2e.stack.deployment_id("compress-catalog/bulk")
    deadline = time.monotonic() + 120
    while True:
        runs = e2e.stack.flow_runs(deployment_id={"any_": [deployment]}, state={"type": {"any_": ["SCHEDULED"]}})
        if runs or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert runs, "the scheduler created no runs for the cron deployment"
    starts = sorted(datetime.fromisoformat(r["expected_start_time"].replace("Z", "+00:00")) for r in runs)
    assert starts[0] > datetime.now(timezone.utc)
    assert all((s.hour, s.minute) == (3, 17) for s in starts)
    assert runs[0]["parameters"]["source"] == os.fspath(e2e.root / "bulk-catalog")
    assert runs[0]["parameters"]["dispatch"] == "deployment"


def test_on_demand_run_form_reads_in_order(e2e):
    """The run form of the deployment ``prefect deploy`` created, as the server stored it (PostgreSQL in CI: JSONB
    sorts keys, so only ``position`` keeps the order)."""
    from tests.flows.run_form import check_run_form

    deployment = e2e.stack.request("GET", "/deployments/name/compress-catalog/on-demand").json()
    check_run_form(deployment["parameter_openapi_schema"])
    assert deployment["parameters"]["dispatch"] == "deployment"  # set by prefect.yaml, not shown in the form
