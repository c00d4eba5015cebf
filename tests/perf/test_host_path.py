"""The fast load's host path gives what the per-record code gave: same records, same errors, same views."""

from __future__ import annotations

import copy
import dataclasses
import math
import random

import numpy as np
import pytest
import torch

from bench.synth import SHAPES, lora_tensors, write_adapter_dir
from compeft import api
from compeft.artifact import ViewPlan
from compeft.codecs.golomb import triton_backend as gp
from compeft.codecs.golomb.format import read_table
from compeft.container import container_path, read_container
from compeft.document import RecordColumns, check
from compeft.errors import ContainerError
from compeft.taskvector import DeltaRecord
from tests.perf.helpers import decode_with


def reference_records(doc: dict) -> tuple[DeltaRecord, ...]:
    """The per-record check as check_document did it before the column-wise one (plus finite θ_init)."""
    records = tuple(DeltaRecord.from_dict(r) for r in doc["tensors"])
    for rec in records:
        if not math.isfinite(rec.theta_init):
            raise ContainerError(f"tensor record {rec.name!r} has a non-finite theta_init")
    offset = 0
    for rec in records:
        if rec.offset != offset:
            raise ContainerError(f"tensor record {rec.name!r} has offset {rec.offset}, expected {offset}")
        offset += rec.numel
    if offset != doc["d"]:
        raise ContainerError(f"tensor records cover {offset} entries, d is {doc['d']}")
    if len({r.name for r in records}) != len(records):
        raise ContainerError("tensor records repeat a name")
    return records


def outcome(fn):
    try:
        return fn()
    except Exception as err:  # the exact type and message are what is compared
        return type(err), str(err)


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostpath")
    src = write_adapter_dir(root / "adapter", lora_tensors(SHAPES["tiny"], seed=3), SHAPES["tiny"])
    api.compress(src, root / "art", density=0.1, device="cpu")
    return read_container(container_path(root / "art"))


@pytest.fixture(scope="module")
def container_v1(container):
    """The same container as format version 1 holds it: the records as a JSON list in the document."""
    doc = {k: v for k, v in container.doc.items() if k not in ("records", "record_dtypes")}
    doc.update(format_version=1, tensors=[r.to_dict() for r in check(container)[1].records()])
    return dataclasses.replace(container, doc=doc, records={})


MUTATIONS = [
    lambda t: t.__setitem__(1, [1, 2]),
    lambda t: t.__setitem__(1, "record"),
    lambda t: t.__setitem__(2, 7),
    lambda t: t.__setitem__(0, None),
    lambda t: t[1].pop("theta_init"),
    lambda t: t[3].pop("name"),
    lambda t: t[1].__setitem__("name", 5),
    lambda t: t[1].__setitem__("name", t[0]["name"]),
    lambda t: t[2].__setitem__("shape", "12"),
    lambda t: t[2].__setitem__("shape", [float(s) for s in t[2]["shape"]]),
    lambda t: t[2].__setitem__("shape", [True, *t[2]["shape"][1:]]),
    lambda t: t[2].__setitem__("shape", [-1, *t[2]["shape"][1:]]),
    lambda t: t[2].__setitem__("shape", 5),
    lambda t: t[2].__setitem__("shape", [[1], 2]),
    lambda t: t[2].__setitem__("shape", [2**70, 1]),
    lambda t: t[2].__setitem__("offset", -1),
    lambda t: t[2].__setitem__("offset", float(t[2]["offset"])),
    lambda t: t[0].__setitem__("offset", False),
    lambda t: t[2].__setitem__("offset", t[2]["offset"] + 1),
    lambda t: t[2].__setitem__("offset", 2**80),
    lambda t: t[4].__setitem__("theta_init", "x"),
    lambda t: t[4].__setitem__("theta_init", True),
    lambda t: t[4].__setitem__("theta_init", 1),
    lambda t: t[4].__setitem__("theta_init", 10**400),
    lambda t: t[4].__setitem__("theta_init", float("nan")),
    lambda t: t[4].__setitem__("dtype", "Q7"),
    lambda t: t[4].__setitem__("dtype", ["BF16"]),
    lambda t: t[4].__setitem__("dtype", "F32"),
    lambda t: t[4].__setitem__("extra", 1),
    lambda t: t.pop(),
    lambda t: t.pop(0),
    lambda t: t.clear(),
]


@pytest.mark.parametrize("index", range(len(MUTATIONS)))
def test_column_check_matches_per_record_check(container_v1, index):
    doc = copy.deepcopy(container_v1.doc)
    MUTATIONS[index](doc["tensors"])
    bad = dataclasses.replace(container_v1, doc=doc)
    expected = outcome(lambda: reference_records(doc))
    got = outcome(lambda: check(bad)[1].records())
    if isinstance(expected, tuple) and expected and isinstance(expected[0], type):
        kind, message = expected
        if issubclass(kind, ContainerError):
            expected = (kind, f"{bad.path}: {message}")
    assert got == expected


def test_column_check_of_intact_document(container, container_v1):
    """Version 2's record columns and version 1's JSON list give the same records."""
    cols = check(container)[1]
    assert cols.records() == reference_records(container_v1.doc)
    assert cols == RecordColumns.of(cols.records()) == check(container_v1)[1]


def reference_views(flat: torch.Tensor, records) -> dict[str, torch.Tensor]:
    out = {}
    for r in records:
        acc, rev = 1, []
        for size in reversed(r.shape):
            rev.append(acc)
            acc *= max(size, 1)
        out[r.name] = flat.as_strided(r.shape, tuple(reversed(rev)), flat.storage_offset() + r.offset)
    return out


@pytest.mark.parametrize("seed", range(300))
def test_views_equal_per_record_views(seed):
    rng = random.Random(seed)
    pool = [(2, 3), (3, 2), (0, 4), (5,), (), (1, 1, 2), (4, 0)]
    layer = [rng.choice(pool) for _ in range(rng.randint(1, 6))]
    shapes = layer * rng.randint(0, 6) + [rng.choice(pool) for _ in range(rng.randint(0, 4))]
    numels = [math.prod(s) for s in shapes]
    offsets = [sum(numels[:i]) for i in range(len(shapes))]
    names = [f"t{i}" for i in range(len(shapes))]
    cols = RecordColumns(tuple(names), tuple(shapes), ("F32",) * len(shapes), (0.0,) * len(shapes), tuple(offsets), tuple(numels))
    flat = torch.arange(sum(numels) + 7, dtype=torch.float32)[5 : 5 + sum(numels)]
    got, ref = ViewPlan(cols).views(flat), reference_views(flat, cols.records())
    assert list(got) == list(ref)
    for name, t in ref.items():
        g = got[name]
        assert (g.shape, g.stride(), g.storage_offset()) == (t.shape, t.stride(), t.storage_offset())
        assert g.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr() and torch.equal(g, t)


def test_plan_layout_holds_the_table_tiles_zeroed_flags_and_values(container):
    """The one array the Triton decode uploads: chunk rows from the table, tiles numbered in chunk order that
    cover every code and unary byte once, zeroed error flags, and the value table's bytes."""
    table = read_table(container.payload, container.doc["d"])
    ids = np.flatnonzero(table.mode == 0)
    values = torch.tensor([0.5, 1.0, 1.5], dtype=torch.bfloat16)
    plan = gp.PlanColumns(table, ids, 64, 16, values)
    rows = plan.host[: gp.N_ROWS * plan.K].reshape(gp.N_ROWS, plan.K)
    assert np.array_equal(rows[gp.CNT], table.count[ids]) and np.array_equal(rows[gp.START], table.start[ids])
    assert np.array_equal(rows[gp.LOW], 8 * table.low_off[ids]) and np.array_equal(rows[gp.UBYTES], table.unary_bytes[ids])
    for sizes, block, first, count, total in ((table.count[ids], 64, rows[gp.TILE0], rows[gp.NTILES], plan.n_tiles),
                                              (table.unary_bytes[ids], 16, rows[gp.BTILE0], rows[gp.NBTILES], plan.nb_tiles)):
        assert np.array_equal(first, np.concatenate([[0], np.cumsum(count)[:-1]])) and count.sum() == total
        assert ((count - 1) * block < np.maximum(sizes, 1)).all() and (count * block >= sizes).all()
    assert not plan.host[plan.errors_at : plan.values_at].any()
    assert torch.equal(plan.tensor[plan.values_at :].view(torch.uint8)[:6].view(torch.bfloat16), values)


def test_decode_checks_d_against_the_payload_before_allocating(container):
    """A document claiming a huge d fails on the chunk table (CodecError), before d entries are allocated."""
    from compeft.errors import CodecError

    values = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.bfloat16)
    with pytest.raises(CodecError):
        decode_with(container.payload, 10**15, "torch", values=values)
