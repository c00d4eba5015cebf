"""Issue 14 in the registry, on SQLite and PostgreSQL: signatures, near-duplicate marks, `registry similar` (sketch
shortlist, exact re-rank), backfill, operations with their inputs (lineage)."""

from __future__ import annotations

import json

import pytest
import torch

import compeft
from compeft.ops import similarity
from compeft.ops.planes import open_planes
from storage import operations
from storage.catalog import register_artifact
from storage.cli import registry_main
from storage.registry import AdapterRecord, OperationInput, OperationRecord, SimilarQuery, open_registry
from storage.stores import open_store
from tests.adapters import lora_config
from tests.ops.conftest import adapter_tensors, make_artifact


@pytest.fixture
def setup(tmp_path, database_url):
    """Five artifacts in a local store and the registry: 0; 1 a near-duplicate of 0; 2 unrelated; 3 related to 0
    (cosine ~0.5); 4 of another layout. Returns (registry, store, rows, directories)."""
    registry = open_registry(database_url, upgrade=True)
    store = open_store(tmp_path / "store")
    specs = [adapter_tensors(1), adapter_tensors(2, shared=1, mix=0.03), adapter_tensors(3),
             adapter_tensors(4, shared=1, mix=0.6), {**adapter_tensors(5), "z.lora_A.weight": torch.ones(2, 3)}]
    rows, dirs = [], []
    for n, tensors in enumerate(specs):
        path = make_artifact(tmp_path, f"art{n}", tensors, config=lora_config("tiny/base"))
        info = compeft.inspect(path)
        adapter = registry.get_or_create_adapter(AdapterRecord(
            uri=f"local://adapter-{n}", repo=f"adapter-{n}", content_sha256=f"{n:064x}", file_hashes={},
            peft_type="LORA", base_model="tiny/base"))
        stored = store.put(path)
        rows.append(register_artifact(registry, adapter, info, stored, {"density": 0.3}, f"{n:064x}"))
        dirs.append(path)
    yield registry, store, rows, dirs
    registry.close()


def test_near_duplicates_are_marked_with_their_exact_cosine(setup, tmp_path):
    registry, store, rows, dirs = setup
    marks = [operations.mark_near_duplicate(registry, store, row, open_planes(d), 0.95, tmp_path / "w")
             for row, d in zip(rows, dirs)]
    [exact] = similarity([dirs[0], dirs[1]], device="cpu")
    assert exact.cosine >= 0.95
    assert marks[1] == operations.DuplicateMark(rows[1].id, rows[0].id, pytest.approx(exact.cosine))
    assert marks[0] is None and marks[2] is None and marks[3] is None and marks[4] is None
    assert registry.duplicate_marks([r.id for r in rows]) == {rows[1].id: (rows[0].id, pytest.approx(exact.cosine))}
    sig = registry.get_signature(rows[4].id)
    assert sig.layout_sha256 != registry.get_signature(rows[0].id).layout_sha256 and "sketch" not in sig.to_dict()


def test_similar_ranks_by_exact_cosine_within_one_layout(setup, tmp_path, database_url, capsys):
    registry, store, rows, dirs = setup
    for row, d in zip(rows, dirs):
        operations.sign(registry, row, open_planes(d))
    found = operations.similar(registry, store, rows[0].id, SimilarQuery(top=10), tmp_path / "w")
    assert [n.artifact_id for n in found] == [rows[1].id, rows[3].id, rows[2].id]  # not 4: another layout
    exact = {p.b: p.cosine for p in similarity(dirs[:4], device="cpu") if p.a == str(dirs[0])}
    for n, d in zip(found, (dirs[1], dirs[3], dirs[2])):
        assert n.cosine == pytest.approx(exact[str(d)]) and abs(n.estimate - n.cosine) < 0.2
    top = operations.similar(registry, store, rows[0].id, SimilarQuery(top=1, min_cosine=0.9), tmp_path / "w")
    assert [n.artifact_id for n in top] == [rows[1].id]
    assert operations.similar(registry, store, rows[4].id, SimilarQuery(), tmp_path / "w") == []
    code = registry_main(["similar", str(rows[0].id), "--top", "2", "--json", "--database-url", database_url,
                          "--store", str(tmp_path / "store")])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [n["artifact_id"] for n in data["neighbours"]] == [rows[1].id, rows[3].id]


def test_unsigned_artifacts_are_signed_from_the_store(setup, tmp_path, database_url, capsys):
    registry, store, rows, _ = setup
    assert [r.id for r in registry.unsigned_artifacts()] == [r.id for r in rows]
    assert registry_main(["sign", "--database-url", database_url, "--store", str(tmp_path / "store")]) == 0
    assert "signed 5 artifact(s)" in capsys.readouterr().out
    assert registry.unsigned_artifacts() == []
    with pytest.raises(Exception, match="top"):
        registry_main(["similar", str(rows[0].id), "--top", "0", "--database-url", database_url])


def test_operations_keep_their_inputs(setup):
    registry, _, rows, _ = setup
    record = OperationRecord(kind="merge", method="ties", options={"lam": 1.0}, output_format="compeft",
                             output_uri="/x", output_sha256="f" * 64,
                             inputs=(OperationInput("1", "a" * 64, 0.5, rows[0].id), OperationInput("/p", "b" * 64, 1.5)),
                             result={"support": 3}, artifact_id=rows[2].id, flow_run_id="run-1")
    row = registry.add_operation(record)
    again = registry.get_operation(row.id)
    assert again.inputs == record.inputs and again.artifact_id == rows[2].id and again.result == {"support": 3}
    assert [o.id for o in registry.operations_using(rows[0].id)] == [row.id]
    assert registry.operations_using(rows[1].id) == []
