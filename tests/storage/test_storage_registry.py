"""Registry on SQLite and real PostgreSQL: migrations, idempotent writes, filters, concurrent writers."""

from __future__ import annotations

import multiprocessing
import threading

import pytest
from sqlalchemy import inspect as sa_inspect
from storage_testlib import adapter_record, artifact_record

from compeft.errors import OptionError
from storage.errors import NotFoundError, RegistryError
from storage.registry import CalibrationRecord, open_registry
from storage.registry import db as regdb


def test_migrations_create_schema_and_are_repeatable(database_url):
    registry = open_registry(database_url, upgrade=True)
    names = set(sa_inspect(registry.engine).get_table_names())
    assert {"sources", "adapters", "artifacts", "calibrations", "publications", "runs"} <= names
    assert regdb.current_revision(registry.engine) == regdb.head_revision()
    assert regdb.head_revision() == regdb.alembic_head_revision()
    registry.upgrade()  # no-op the second time
    registry.close()


def test_non_sqlite_database_must_be_migrated_first(postgres_url):
    with pytest.raises(RegistryError, match="compeft db upgrade"):
        open_registry(postgres_url)
    open_registry(postgres_url, upgrade=True).close()
    open_registry(postgres_url).close()  # now current


def test_sqlite_default_is_created_and_migrated_on_first_use(tmp_path, monkeypatch):
    monkeypatch.delenv("COMPEFT_DATABASE_URL", raising=False)
    monkeypatch.setenv("COMPEFT_HOME", str(tmp_path / "home"))
    with open_registry() as registry:
        assert registry.list_artifacts() == ([], 0)
    assert (tmp_path / "home" / "registry.db").is_file()


def test_database_url_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("COMPEFT_HOME", str(tmp_path))
    monkeypatch.delenv("COMPEFT_DATABASE_URL", raising=False)
    assert regdb.resolve_database_url() == f"sqlite:///{tmp_path / 'registry.db'}"
    monkeypatch.setenv("COMPEFT_DATABASE_URL", "sqlite:///env.db")
    assert regdb.resolve_database_url() == "sqlite:///env.db"
    assert regdb.resolve_database_url("sqlite:///flag.db") == "sqlite:///flag.db"


def test_idempotent_artifact_and_full_detail(database_url):
    with open_registry(database_url, upgrade=True) as registry:
        source = registry.get_or_create_source("hf://org", "hf")
        assert registry.get_or_create_source("hf://org", "hf").id == source.id
        adapter = registry.get_or_create_adapter(adapter_record(1), source.id)
        assert registry.get_or_create_adapter(adapter_record(1), source.id).id == adapter.id
        record = artifact_record(1)
        assert registry.find_artifact(record.source_sha256, record.options_hash) is None
        art, created = registry.get_or_create_artifact(adapter.id, record)
        again, created_again = registry.get_or_create_artifact(adapter.id, record)
        assert created and not created_again and again.id == art.id
        assert registry.find_artifact(record.source_sha256, record.options_hash).id == art.id
        assert [a.id for a in registry.find_artifacts_by_sha256(record.sha256)] == [art.id]
        other, created_other = registry.get_or_create_artifact(adapter.id, artifact_record(1, density=0.2))
        assert created_other and other.id != art.id

        cal = registry.add_calibration(art.id, CalibrationRecord(
            task="synthetic", metric="acc",
            scores=({"density": 0.1, "alpha": 1.0, "score": 0.9}, {"density": 0.05, "alpha": 2.0, "score": 0.8}),
            chosen_density=0.1, chosen_alpha=1.0, chosen_score=0.9, original_score=0.92, runtime_s=3.5))
        pub, pub_created = registry.get_or_create_publication(art.id, "hf://dest", "hf://dest/adapter-1-compeft", "c" * 40)
        pub2, pub2_created = registry.get_or_create_publication(art.id, "hf://dest", "hf://dest/adapter-1-compeft", "c" * 40)
        assert pub_created and not pub2_created and pub.id == pub2.id

        detail = registry.get_artifact(art.id).to_dict()
        assert detail["adapter"]["uri"] == "hf://org/adapter-1@" + f"{1:040x}"
        assert detail["adapter"]["target_modules"] == ["q_proj", "v_proj"]
        assert detail["calibrations"][0]["id"] == cal.id
        assert detail["calibrations"][0]["scores"][1] == {"density": 0.05, "alpha": 2.0, "score": 0.8}
        assert detail["publications"][0]["remote_revision"] == "c" * 40
        assert detail["created_at"].endswith("+00:00")
        with pytest.raises(NotFoundError, match="artifact 9999"):
            registry.get_artifact(9999)


def test_adapter_content_is_found_by_uri_and_revision(database_url):
    """A re-crawl can learn an adapter's content hash from (uri, revision) without downloading it."""
    with open_registry(database_url, upgrade=True) as registry:
        record = adapter_record(3)
        assert registry.find_adapter_content(record.uri, record.revision) is None
        registry.get_or_create_adapter(record)
        assert registry.find_adapter_content(record.uri, record.revision) == record.content_sha256
        assert registry.find_adapter_content(record.uri, "f" * 40) is None


def test_list_filters_and_paging(database_url):
    with open_registry(database_url, upgrade=True) as registry:
        for n in range(6):
            adapter = registry.get_or_create_adapter(
                adapter_record(n, base_model="m/a" if n % 2 else "m/b", peft_type="IA3" if n == 5 else "LORA"))
            registry.get_or_create_artifact(adapter.id, artifact_record(n, ratio=float(n * 5)))
        items, total = registry.list_artifacts()
        assert total == 6 and items[0].artifact.source_sha256 == f"{5:064x}"  # newest first
        assert registry.list_artifacts(base_model="m/a")[1] == 3
        assert registry.list_artifacts(peft_type="ia3")[1] == 1
        assert registry.list_artifacts(min_ratio=15)[1] == 3
        assert registry.list_artifacts(base_model="m/a", min_ratio=15)[1] == 2
        page, total = registry.list_artifacts(limit=4, offset=4)
        assert total == 6 and len(page) == 2
        for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"offset": 1 << 63}, {"base_model": "a\x00b"}):
            with pytest.raises(OptionError, match=next(iter(bad))):
                registry.list_artifacts(**bad)
        with pytest.raises(NotFoundError):
            registry.get_artifact(1 << 63)


def test_runs_lifecycle(database_url):
    with open_registry(database_url, upgrade=True) as registry:
        run = registry.start_run("flow-run-1", {"source": "hf://org", "density": 0.1})
        assert run.status == "running" and registry.start_run("flow-run-1", {}).id == run.id
        done = registry.finish_run("flow-run-1", "completed", {"found": 3, "compressed": 2, "skipped": 1},
                                   [{"uri": "hf://org/x", "error": "bad"}])
        assert done.status == "completed" and done.counts["found"] == 3 and done.finished_at is not None
        assert registry.get_run("flow-run-1").errors[0]["error"] == "bad"
        registry.start_run("flow-run-2", {})
        runs, total = registry.list_runs()
        assert total == 2 and [r.flow_run_id for r in runs] == ["flow-run-2", "flow-run-1"]
        assert [r.flow_run_id for r in registry.list_runs(status="running")[0]] == ["flow-run-2"]
        with pytest.raises(RegistryError, match="unknown status"):
            registry.finish_run("flow-run-1", "exploded", {})
        with pytest.raises(NotFoundError):
            registry.finish_run("nope", "failed", {})


def _writer(url: str, worker: int, rounds: int, queue) -> None:
    """One worker process: registers the same 5 adapters/artifacts as every other worker."""
    try:
        registry = open_registry(url)
        ids = []
        for n in range(rounds):
            source = registry.get_or_create_source("hf://race", "hf")
            adapter = registry.get_or_create_adapter(adapter_record(n), source.id)
            art, _ = registry.get_or_create_artifact(adapter.id, artifact_record(n))
            registry.get_or_create_publication(art.id, "hf://dest", f"hf://dest/{n}", "rev")
            ids.append(art.id)
        registry.close()
        queue.put((worker, ids, None))
    except Exception as err:  # noqa: BLE001 - reported to the parent
        queue.put((worker, [], repr(err)))


@pytest.mark.postgres
def test_concurrent_writer_processes_on_postgres(postgres_url):
    open_registry(postgres_url, upgrade=True).close()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(postgres_url, w, 5, queue)) for w in range(6)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert [r[2] for r in results] == [None] * 6
    assert len({tuple(r[1]) for r in results}) == 1  # every worker got the same artifact ids
    with open_registry(postgres_url) as registry:
        assert registry.list_artifacts()[1] == 5


def test_concurrent_writer_threads(database_url):
    with open_registry(database_url, upgrade=True) as registry:
        barrier = threading.Barrier(8)
        found, errors = [], []

        def write():
            try:
                barrier.wait()
                adapter = registry.get_or_create_adapter(adapter_record(42))
                found.append(registry.get_or_create_artifact(adapter.id, artifact_record(42)))
            except Exception as err:  # noqa: BLE001
                errors.append(err)

        threads = [threading.Thread(target=write) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len({a.id for a, _ in found}) == 1 and sum(c for _, c in found) == 1


def test_database_errors_are_one_line_registry_errors(tmp_path):
    with pytest.raises(RegistryError, match="invalid database URL"):
        open_registry("not a url")
    with pytest.raises(RegistryError) as info:
        open_registry("postgresql+psycopg2://postgres:sekrit@127.0.0.1:1/none")
    assert "sekrit" not in str(info.value) and "\n" not in str(info.value)


def _open_and_write(url: str, n: int, queue) -> None:
    try:
        with open_registry(url) as registry:
            adapter = registry.get_or_create_adapter(adapter_record(n % 2))
            registry.get_or_create_artifact(adapter.id, artifact_record(n % 2))
        queue.put(None)
    except Exception as err:  # noqa: BLE001 - reported to the parent
        queue.put(repr(err))


def test_sqlite_first_use_from_parallel_processes(tmp_path):
    """Several workers opening a fresh embedded database at once all succeed (one migrates, all write)."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_open_and_write, args=(url, n, queue)) for n in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    assert results == [None] * 4
    with open_registry(url) as registry:
        assert registry.list_artifacts()[1] == 2


def test_subfolder_layout_and_dtype_round_trip(database_url):
    """Migration 0002: an adapter's folder inside its repo, its layout and dtype are recorded and read back."""
    from dataclasses import replace

    with open_registry(database_url, upgrade=True) as registry:
        record = replace(adapter_record(7), uri=f"hf://org/multi@{7:040x}/task_a/v2", repo="org/multi",
                         subfolder="task_a/v2", layout="peft", dtype="BF16+F32")
        row = registry.get_or_create_adapter(record)
        assert (row.subfolder, row.layout, row.dtype) == ("task_a/v2", "peft", "BF16+F32")
        root = registry.get_or_create_adapter(replace(adapter_record(7), uri=f"hf://org/multi@{7:040x}", repo="org/multi"))
        assert root.id != row.id and (root.subfolder, root.layout, root.dtype) == ("", None, None)
        art, _ = registry.get_or_create_artifact(row.id, artifact_record(7))
        detail = registry.get_artifact(art.id)
        assert detail.adapter.subfolder == "task_a/v2" and detail.to_dict()["adapter"]["dtype"] == "BF16+F32"


def test_migration_0002_keeps_existing_adapters(database_url):
    """Adapters registered at revision 0001 come out of the upgrade at the repo root, in the peft layout."""
    from sqlalchemy import text

    engine = regdb.make_engine(database_url)
    try:
        regdb.upgrade(engine, "0001")
        with engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO adapters (uri, repo, content_sha256, file_hashes, created_at) "
                "VALUES ('hf://org/old@main', 'org/old', :sha, '{}', CURRENT_TIMESTAMP)"), {"sha": "1" * 64})
        regdb.upgrade(engine)
        with engine.connect() as conn:
            row = conn.execute(text("SELECT subfolder, layout, dtype FROM adapters")).one()
        assert tuple(row) == ("", "peft", None)
    finally:
        engine.dispose()
