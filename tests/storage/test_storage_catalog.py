"""The service's rules in storage.catalog, without Prefect: known content, existing work, outcomes."""

from __future__ import annotations

from storage_testlib import adapter_record, artifact_record

from storage import catalog
from storage.hashing import content_hash
from storage.registry import CalibrationRecord, open_registry
from storage.values import AdapterRef, RemoteFile


def _ref(n: int, files: tuple[RemoteFile, ...] = (), revision: str | None = None) -> AdapterRef:
    return AdapterRef(uri=f"hf://org/adapter-{n}@{n:040x}", source_uri="hf://org", name=f"adapter-{n}",
                      revision=revision, files=files, peft_type="LORA")


def _calibration() -> CalibrationRecord:
    return CalibrationRecord(task="t", metric="acc", scores=({"density": 0.1, "alpha": 1.0, "score": 0.5},),
                             chosen_density=0.1, chosen_alpha=1.0, chosen_score=0.5, original_score=0.6)


def test_known_content_from_listing_hashes_else_registry(sqlite_url):
    with open_registry(sqlite_url, upgrade=True) as registry:
        listed = (RemoteFile("adapter_config.json", sha256="a" * 64), RemoteFile("adapter_model.safetensors", sha256="b" * 64))
        assert catalog.known_content(registry, _ref(1, listed)) == content_hash(
            {"adapter_config.json": "a" * 64, "adapter_model.safetensors": "b" * 64})
        partial = (RemoteFile("adapter_config.json", sha256="a" * 64), RemoteFile("adapter_model.safetensors"))
        assert catalog.known_content(registry, _ref(1, partial)) is None  # no revision, no full hashes
        assert catalog.known_content(registry, _ref(1, partial, revision=f"{1:040x}")) is None  # not registered
        source = registry.get_or_create_source("hf://org", "hf")
        registry.get_or_create_adapter(adapter_record(1), source.id)
        assert catalog.known_content(registry, _ref(1, partial, revision=f"{1:040x}")) == f"{1:064x}"
        assert catalog.known_content(registry, _ref(1, partial, revision=f"{2:040x}")) is None


def test_existing_work_tracks_calibration_and_publications(sqlite_url):
    with open_registry(sqlite_url, upgrade=True) as registry:
        record = artifact_record(3)
        assert catalog.existing_work(registry, record.source_sha256, record.options_hash) is None
        source = registry.get_or_create_source("hf://org", "hf")
        adapter = registry.get_or_create_adapter(adapter_record(3), source.id)
        artifact, _ = registry.get_or_create_artifact(adapter.id, record)

        work = catalog.existing_work(registry, record.source_sha256, record.options_hash)
        assert work.artifact.id == artifact.id and work.calibration is None and not work.publications
        assert work.usable(calibrating=False) and work.done(calibrating=False, publish_to=None)
        assert not work.usable(calibrating=True)  # calibration lost after a crash: redo it
        assert not work.done(calibrating=False, publish_to="hub")

        registry.add_calibration(artifact.id, _calibration())
        registry.get_or_create_publication(artifact.id, "hub", "hf://org/adapter-3-compeft", "r1")
        work = catalog.existing_work(registry, record.source_sha256, record.options_hash)
        assert work.calibration.chosen_score == 0.5
        assert work.publications == {"hub": "hf://org/adapter-3-compeft"}
        assert work.done(calibrating=True, publish_to="hub")
        assert not work.done(calibrating=True, publish_to="s3")


def test_outcomes_round_trip_and_summaries(sqlite_url):
    with open_registry(sqlite_url, upgrade=True) as registry:
        source = registry.get_or_create_source("hf://org", "hf")
        adapter = registry.get_or_create_adapter(adapter_record(4), source.id)
        artifact, _ = registry.get_or_create_artifact(adapter.id, artifact_record(4))
        calibration = registry.add_calibration(artifact.id, _calibration())
        done = catalog.outcome(_ref(4), "compressed", artifact, calibration=calibration)
        failed = catalog.outcome(_ref(5), "failed", reason="adapter_config.json: not JSON")

        again = catalog.AdapterOutcome.from_fields(registry, done.fields())
        assert again == done and again.link == artifact.storage_uri
        assert done.fields()["score_original"] == 0.6 and done.fields()["ratio"] == artifact.ratio
        assert catalog.AdapterOutcome.from_fields(registry, failed.fields()) == failed and failed.link is None
        assert catalog.counts([done, failed]) == {"compressed": 1, "existing": 0, "skipped": 0, "failed": 1}
        assert catalog.failures([done, failed]) == [
            {"uri": failed.uri, "name": failed.name, "status": "failed", "reason": "adapter_config.json: not JSON"}]


def test_known_work_of_many_adapters_in_a_few_queries(database_url):
    """The catalog's plan: one bulk lookup for the whole listing gives what existing_work gives one by one
    (revision-known content, publications, the last calibration), across query chunks of 500."""
    from sqlalchemy import event

    with open_registry(database_url, upgrade=True) as registry:
        source = registry.get_or_create_source("hf://org", "hf")
        for n in (1, 2, 700):
            adapter = registry.get_or_create_adapter(adapter_record(n), source.id)
            artifact, _ = registry.get_or_create_artifact(adapter.id, artifact_record(n))
            if n == 2:
                registry.add_calibration(artifact.id, _calibration())
                registry.get_or_create_publication(artifact.id, "hub", "hf://org/adapter-2-compeft", "r1")
        key = artifact_record(1).options_hash
        refs = [_ref(n, revision=f"{n:040x}") for n in range(1, 801)]
        queries = []
        event.listen(registry.engine, "before_cursor_execute", lambda *args: queries.append(1))
        work = catalog.known_work(registry, [(ref, key) for ref in refs])
        assert len(queries) <= 12  # 2 chunks of adapter URIs + 4 queries for the 3 artifacts found
        found = {i + 1: w for i, w in enumerate(work) if w is not None}
        assert sorted(found) == [1, 2, 700]
        for n, w in found.items():
            assert w == catalog.existing_work(registry, f"{n:064x}", key)
        assert found[2].publications == {"hub": "hf://org/adapter-2-compeft"} and found[2].calibration.chosen_score == 0.5
        assert catalog.known_work(registry, [(_ref(1, revision=f"{1:040x}"), "other-key")]) == [None]


def test_base_model_named_consistently(tmp_path):
    """A Hub id stays as it is; a path inside the catalog is 'catalog:' + the path from the catalog root, however
    the adapter (../base) or the run (an absolute path) wrote it; a path outside is absolute; none is None."""
    root = tmp_path / "catalog"
    (root / "tiny-llama").mkdir(parents=True)
    (root / "group" / "lora").mkdir(parents=True)
    local = AdapterRef(uri=str(root / "group" / "lora"), source_uri=str(root), name="lora", revision=None, files=(),
                       peft_type="LORA")
    assert catalog.base_model_name(local, "../../tiny-llama") == "catalog:tiny-llama"
    assert catalog.base_model_name(local, str(root / "tiny-llama")) == "catalog:tiny-llama"
    assert catalog.base_model_name(local, "meta-llama/Llama-3.2-1B") == "meta-llama/Llama-3.2-1B"
    assert catalog.base_model_name(local, "../../../elsewhere") == str(tmp_path / "elsewhere")
    assert catalog.base_model_name(local, None) is None and catalog.base_model_name(local, "") is None
    s3 = AdapterRef(uri="s3://bucket/adapters/lora-1", source_uri="s3://bucket/adapters", name="lora-1", revision=None,
                    files=(), peft_type="LORA")
    assert catalog.base_model_name(s3, "../base") == "catalog:base"
    assert catalog.base_model_name(s3, "org/model") == "org/model"
    assert catalog.base_model_name(_ref(1), "org/model") == "org/model"
