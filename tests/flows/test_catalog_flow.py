"""compress_catalog / compress_adapters in-process: outcomes, registry rows, stored and published files,
Prefect artifacts, idempotent re-runs, one bad adapter failing alone, retries only on transient errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage.errors import SourceError, TransientError

pytestmark = pytest.mark.usefixtures("prefect_api")


def _counts(database_url: str) -> dict[str, int]:
    from storage.config import ServiceConfig
    from storage.registry.schema import adapters, artifacts, calibrations, publications

    with ServiceConfig(database_url=database_url).registry().engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                for t in (adapters, artifacts, calibrations, publications)}


def _artifacts_of(flow_run_id: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


def test_catalog_compresses_registers_stores_and_publishes(catalog, service):
    from flows.catalog import compress_catalog

    result = compress_catalog(str(catalog), service=service, batch_size=2)
    by_name = {o["name"]: o for o in result["outcomes"]}
    assert result["counts"] == {"compressed": 3, "existing": 0, "skipped": 2, "failed": 1}
    assert by_name["lora-pickle"]["status"] == "skipped" and "pickle" in by_name["lora-pickle"]["reason"]
    assert by_name["base-model"]["status"] == "skipped" and "not a PEFT adapter" in by_name["base-model"]["reason"]
    broken = by_name["lora-broken"]
    assert broken["status"] == "failed" and "safetensors" in broken["reason"]
    assert str(catalog / "lora-broken") in broken["reason"] and "compeft-batch" not in broken["reason"]
    assert _counts(service.database_url) == {"adapters": 3, "artifacts": 3, "calibrations": 0, "publications": 3}

    reg = service.config().registry()
    for name in ("lora-0", "lora-1", "lora-2"):
        o = by_name[name]
        assert o["status"] == "compressed" and o["bytes_artifact"] < o["bytes_source"] and o["ratio"] > 1
        detail = reg.get_artifact(o["artifact_id"])
        assert detail.adapter.uri == str(catalog / name) and detail.artifact.density == 0.1
        stored = Path(detail.artifact.storage_uri)
        assert (stored / "compeft.safetensors").is_file() and stored.is_relative_to(Path(service.store))
        published = Path(o["published_uri"])
        assert (published / "compeft.safetensors").read_bytes() == (stored / "compeft.safetensors").read_bytes()
        assert [p.destination for p in detail.publications] == [service.publish_to]

    run = reg.get_run(result["run_id"])
    assert run.status == "completed" and run.counts["failed"] == 1
    assert [e["name"] for e in run.errors if e["status"] == "failed"] == ["lora-broken"]

    by_key = {a.key: a for a in _artifacts_of(result["run_id"])}
    assert {"compeft-outcomes", "compeft-outcome-fields"} <= set(by_key)
    rows = _rows(by_key["compeft-outcomes"])  # what a person reads: the columns in words, in reading order
    assert list(rows[0]) == ["Adapter", "Status", "Size before → after", "Ratio", "Bits/param", "Density k", "α",
                             "Score original → compressed", "Link or reason"]
    table = {r["Adapter"]: r for r in rows}
    assert sorted(table) == ["base-model", "lora-0", "lora-1", "lora-2", "lora-broken", "lora-pickle"]
    assert table["lora-0"]["Status"] == "compressed" and " kB → " in table["lora-0"]["Size before → after"]
    assert table["lora-0"]["Ratio"].endswith("×") and table["lora-0"]["Link or reason"] == by_name["lora-0"]["published_uri"]
    assert "pickle" in table["lora-pickle"]["Link or reason"]
    fields = {r["name"]: r for r in _rows(by_key["compeft-outcome-fields"])}  # the machine-readable detail
    assert fields["lora-0"] == by_name["lora-0"]
    progress = [a for a in _artifacts_of(result["run_id"]) if a.type == "progress"]
    assert len(progress) == 1 and float(progress[0].data) == pytest.approx(100.0)
    assert progress[0].description == "done: 3 compressed, 2 skipped, 1 failed"


def _rows(artifact) -> list[dict]:
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data


def test_rerun_does_no_work_and_adds_no_rows(catalog, service, monkeypatch):
    from flows import tasks
    from flows.catalog import compress_catalog

    compress_catalog(str(catalog), service=service)
    before = _counts(service.database_url)

    def no_compress(*args, **kwargs):
        raise AssertionError("re-run compressed again")

    monkeypatch.setattr(tasks, "compress_adapter", no_compress)
    result = compress_catalog(str(catalog), service=service)
    assert result["counts"]["existing"] == 3 and result["counts"]["compressed"] == 0
    assert _counts(service.database_url) == before


def test_force_recompresses_without_duplicating(catalog, service):
    from flows.catalog import compress_catalog

    first = compress_catalog(str(catalog), service=service)
    again = compress_catalog(str(catalog), service=service, force=True)
    assert again["counts"]["compressed"] == 3

    def ids(r):
        return sorted(o["artifact_id"] for o in r["outcomes"] if o["artifact_id"])

    assert ids(first) == ids(again)
    assert _counts(service.database_url)["artifacts"] == 3 and _counts(service.database_url)["publications"] == 3


def test_new_options_make_new_artifacts_and_publish_existing_ones(catalog, service):
    from flows.catalog import compress_catalog
    from flows.params import CompressionOptions, ServiceParameters

    unpublished = ServiceParameters(database_url=service.database_url, store=service.store)
    compress_catalog(str(catalog), service=unpublished)
    assert _counts(service.database_url)["publications"] == 0
    result = compress_catalog(str(catalog), service=service)  # same options, now with a destination
    assert result["counts"]["existing"] == 3 and _counts(service.database_url)["publications"] == 3
    assert all(Path(o["published_uri"], "compeft.safetensors").is_file() for o in result["outcomes"]
               if o["status"] == "existing")
    denser = compress_catalog(str(catalog), options=CompressionOptions(density=0.3), service=service)
    assert denser["counts"]["compressed"] == 3 and _counts(service.database_url)["artifacts"] == 6


def test_a_transient_error_fails_only_its_adapter_and_the_next_run_does_it(catalog, service, monkeypatch):
    """Tasks never retry (storage's RetryPolicy owns the retries of network calls): a TransientError that outlived
    them fails that adapter alone, unregistered, so the next run compresses it; bad input fails at once."""
    from flows.catalog import compress_catalog
    from storage.sources.local import LocalSource

    real_fetch, calls = LocalSource.fetch, []

    def flaky(self, ref, dest):
        calls.append(ref.name)
        if ref.name == "lora-0" and calls.count("lora-0") == 1:
            raise TransientError("HTTP 503 from the source: gave up after 5 attempts")
        if ref.name == "lora-1":
            raise SourceError("lora-1: repo not found (404)")
        return real_fetch(self, ref, dest)

    monkeypatch.setattr(LocalSource, "fetch", flaky)
    result = compress_catalog(str(catalog), service=service)
    by_name = {o["name"]: o for o in result["outcomes"]}
    assert calls.count("lora-0") == 1 and by_name["lora-0"]["status"] == "failed" and "503" in by_name["lora-0"]["reason"]
    assert calls.count("lora-1") == 1 and by_name["lora-1"]["status"] == "failed"
    assert "404" in by_name["lora-1"]["reason"]
    assert by_name["lora-2"]["status"] == "compressed"
    again = {o["name"]: o["status"] for o in compress_catalog(str(catalog), service=service)["outcomes"]}
    assert again["lora-0"] == "compressed" and again["lora-2"] == "existing" and calls.count("lora-0") == 2


def test_missing_source_fails_the_run_with_one_line(tmp_path, service):
    """Bad input fails the run with its one-line reason, in the logs too: no traceback, said once per run."""
    import logging

    from flows.catalog import compress_catalog

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    loggers = [logging.getLogger(n) for n in ("prefect.flow_runs", "prefect.task_runs")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        with pytest.raises(SourceError, match="does not exist"):
            compress_catalog(str(tmp_path / "nowhere"), service=service)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    failures = [r for r in records if r.levelno >= logging.ERROR or "Failed" in r.getMessage()]
    assert failures and all(r.exc_info is None and "\n" not in r.getMessage() for r in failures)
    assert all("does not exist" in r.getMessage() for r in failures)
    assert len(failures) == 2  # the crawl task's final state and the flow run's


def test_group_batches_by_base_model_and_size():
    from flows.catalog import group_batches
    from flows.params import CompressionOptions
    from storage.values import AdapterRef

    items = [AdapterRef(uri=f"/c/a{i}", source_uri="/c", name=f"a{i}", revision=None, files=(), peft_type="LORA",
                        base_model="A" if i < 5 else "B") for i in range(7)]
    batches = group_batches(items, CompressionOptions(), batch_size=2)
    assert [[i.name for i in b] for b in batches] == [["a0", "a1"], ["a2", "a3"], ["a4"], ["a5", "a6"]]
    assert all(len({i.base_model for i in b}) == 1 for b in batches)


def test_catalog_of_nested_repos_keeps_their_layout_and_reports_a_census(tmp_path, service):
    """Adapters below the root (a multi-adapter save, per-task folders, checkpoints) are compressed one by one,
    recorded with their folder, published in the source's layout, and counted in the run's census artifact."""
    import sys

    from flows.catalog import compress_catalog

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))
    try:
        from storage_testlib import FOUND_FINAL, build_tree
    finally:
        sys.path.pop(0)
    root = build_tree(tmp_path / "tree")
    result = compress_catalog(str(root), service=service, batch_size=4)
    assert result["counts"] == {"compressed": 6, "existing": 0, "skipped": 4, "failed": 0}
    assert {o["name"] for o in result["outcomes"] if o["status"] == "compressed"} == FOUND_FINAL
    published = Path(service.publish_to)
    for name in FOUND_FINAL:
        assert (published / name / "compeft.safetensors").is_file(), name
    reg = service.config().registry()
    other = next(o for o in result["outcomes"] if o["name"] == "multi/other")
    adapter = reg.get_artifact(other["artifact_id"]).adapter
    assert (adapter.repo, adapter.subfolder, adapter.layout, adapter.dtype) == (str(root / "multi"), "other", "peft", "F32")
    census = next(a for a in _artifacts_of(result["run_id"]) if a.key == "compeft-census")
    assert census.type == "markdown" and "6 adapter(s) found, 4 skipped" in census.data
    assert "| tiny/base | 5 |" in census.data and "| LORA | 6 |" in census.data and "pickle formats" in census.data
