"""Format version 3's record table (compeft/record_table.py, docs/format.md): exact round trips, one canonical
encoding (every table a reader accepts is the one the writer writes), hostile tables refused with one line, and
the whole file of a 20M-parameter, 224-tensor LoRA within 1.02·H(k)·d bits + 4 KiB (issue 12, small adapters)."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
import torch
from checks import read_record_table

from compeft.errors import ContainerError
from compeft.record_table import (
    decode_table,
    decode_varints,
    encode_table,
    encode_varints,
    float_bits,
)

DTYPES = ["BF16", "F16", "F32"]


def random_records(rng: random.Random, n: int) -> tuple[list[str], list[tuple]]:
    """Names sorted like τ (with empty, repeated and non-ASCII tokens) and (dtype, θ_init, shape) kinds."""
    parts = ["base_model", "model", "layers", "q_proj", "lora_A", "lora_B", "weight", "", "ü", "a b", "0", "17"]
    names = sorted({".".join(rng.choice(parts) for _ in range(rng.randint(1, 7))) for _ in range(n)})
    thetas = [0.0, 1.0, -0.0, -2.5, 3e38]
    kinds = [(rng.randrange(3), rng.choice(thetas), tuple(rng.randint(0, 70) for _ in range(rng.randint(0, 3))))
             for _ in names]
    return names, kinds


def decoded(data: bytes, n: int) -> tuple[list[str], list[tuple]]:
    names, kinds, kind_of = decode_table(data, n, len(DTYPES), 8)
    return names, [kinds[i] for i in kind_of.tolist()]


@pytest.mark.parametrize("seed", range(20))
def test_round_trip_is_exact_and_matches_the_spec(seed):
    """decode(encode(records)) is the records (θ_init bit for bit, -0.0 kept), and an independent decoder written
    from docs/format.md reads the same."""
    rng = random.Random(seed)
    names, kinds = random_records(rng, rng.randint(0, 60))
    data = encode_table(names, kinds)
    got_names, got_kinds = decoded(data, len(names))
    assert got_names == names
    assert [(d, float_bits(t), s) for d, t, s in got_kinds] == [(d, float_bits(t), s) for d, t, s in kinds]
    spec = read_record_table(data, len(names), DTYPES)
    assert [r["name"] for r in spec] == names and [tuple(r["shape"]) for r in spec] == [k[2] for k in kinds]


def test_varints_round_trip_at_the_edges():
    values = [0, 1, 127, 128, 16383, 16384, (1 << 53) - 1, 1 << 53, (1 << 53) + 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
    data = encode_varints(values)
    assert decode_varints(np.frombuffer(data, dtype=np.uint8)).tolist() == values
    assert encode_varints([300]) == b"\xac\x02"  # LEB128's textbook example


@pytest.mark.parametrize("seed", range(4))
def test_every_accepted_table_is_the_writers_encoding(seed):
    """Issue 15 item 5 for the records: random byte edits, insertions and cuts of valid tables are either refused
    (ContainerError) or re-encode to exactly the same bytes: one table, one reading."""
    rng = random.Random(1000 + seed)
    accepted = refused = 0
    for _ in range(400):
        names, kinds = random_records(rng, rng.randint(1, 20))
        data = bytearray(encode_table(names, kinds))
        for _ in range(rng.randint(1, 3)):
            op = rng.randrange(4)
            at = rng.randrange(len(data))
            if op == 0:
                data[at] ^= 1 << rng.randrange(8)
            elif op == 1:
                data[at] = rng.randrange(256)
            elif op == 2:
                data.insert(at, rng.choice([0x80, 0x00, 0x2E, rng.randrange(256)]))
            else:
                del data[at]
        n = len(names) + rng.choice([0, 0, 0, 1, -1])
        try:
            got_names, got_kinds = decoded(bytes(data), n)
        except ContainerError as err:
            assert "\n" not in str(err)
            refused += 1
            continue
        accepted += 1
        assert encode_table(got_names, got_kinds) == bytes(data)
    assert refused > 100


def _table(head: list[int], cols: list[int], text: bytes) -> bytes:
    return encode_varints(head) + encode_varints(cols) + text


ONE = [1, 1, 1, 0, 0, 1, 4]  # one token "a", one kind (F16... index 0, θ 0.0, shape [4])
HOSTILE = {
    "non-minimal-varint": (bytes([1, 0x81, 0x00]) + encode_varints([1, 0, 0, 1, 4, 0, 1, 0, 0]) + b"a", "fewest bytes"),
    "number-of-2^64": (bytes([0xFF] * 9 + [0x02]), "2^64"),
    "cut-inside-a-number": (bytes([0x81]), "ends inside a number"),
    "token-with-a-dot": (_table([1, 3, 1, 0, 0, 1, 4], [0, 1, 0, 0], b"a.b"), "hold a '.'"),
    "tokens-repeat": (_table([2, 1, 1, 1, 0, 0, 1, 4], [0, 0, 1, 1, 0, 0, 0, 1], b"aa"), "repeat"),
    "tokens-out-of-first-use-order": (_table([2, 1, 1, 1, 0, 0, 1, 4], [0, 0, 1, 1, 0, 0, 1, 0], b"ab"), "order of first use"),
    "token-unused": (_table([2, 1, 1, 1, 0, 0, 1, 4], [0, 1, 0, 0], b"ab"), "not all used"),
    "kinds-repeat": (_table([1, 1, 2, 0, 0, 1, 4, 0, 0, 1, 4], [0, 0, 1, 1, 0, 1, 0, 0], b"a"), "kinds repeat"),
    "shared-not-longest": (_table([2, 1, 1, 1, 0, 0, 1, 4], [0, 0, 1, 2, 0, 0, 0, 0, 1], b"ab"), "fewer tokens"),
    "shared-past-the-previous-name": (_table(ONE, [0, 2, 1, 0, 0, 0, 0], b"a"), "more tokens than the previous"),
    "added-counts-wrong": (_table(ONE, [0, 2, 0, 0], b"a"), "added token counts"),
    "trailing-bytes": (_table(ONE, [0, 1, 0, 0], b"a") + b"z", "record table"),
    "dtype-index-past": (_table([1, 1, 1, 7, 0, 1, 4], [0, 1, 0, 0], b"a"), "dtype index"),
    "theta-nan": (_table([1, 1, 1, 0, float_bits(math.nan), 1, 4], [0, 1, 0, 0], b"a"), "theta_init"),
    "theta-beyond-float32": (_table([1, 1, 1, 0, float_bits(1e39), 1, 4], [0, 1, 0, 0], b"a"), "theta_init"),
    "rank-9": (_table([1, 1, 1, 0, 0, 9, *[1] * 9], [0, 1, 0, 0], b"a"), "dimensions"),
    "kind-index-past": (_table(ONE, [0, 1, 3, 0], b"a"), "kind index"),
    "no-name-tokens": (_table(ONE, [0, 0, 1, 0, 0, 0, 0], b"a"), "no tokens"),
    "name-bomb": (_table([1, 60_000, 1, 0, 0, 1, 4], [0] + [1000] * 1999 + [1000] + [0] * 1999 + [0] * 2000 + [0] * 1000,
                         b"x" * 60_000), "names expand"),
    "token-grid-bomb": (_table([1, 1, 1, 0, 0, 1, 4], [0] + [1024] * 19_999 + [1024] + [0] * 19_999 + [0] * 20_000 + [0] * 1024,
                               b"a"), "too many to expand"),
    "not-utf8": (_table(ONE, [0, 1, 0, 0], b"\xff"), "not UTF-8"),
}
COUNTS = {"shared-past-the-previous-name": 2, "kinds-repeat": 2, "tokens-repeat": 2, "tokens-out-of-first-use-order": 2,
          "shared-not-longest": 2, "name-bomb": 2000, "token-grid-bomb": 20_000, "no-name-tokens": 2}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tables_are_refused_with_one_line(case):
    data, match = HOSTILE[case]
    with pytest.raises(ContainerError, match=re.escape(match)) as info:
        decode_table(data, COUNTS.get(case, 1), len(DTYPES), 8)
    assert "\n" not in str(info.value) and str(info.value).startswith("record table: ")


def test_lora_table_is_a_few_bytes_a_record():
    """A 224-tensor LoRA's records (Qwen2-7B shapes) take under 8 bytes each, against ~96 in version 2."""
    names, kinds = [], []
    for layer in range(28):
        for proj, out in (("k_proj", 512), ("o_proj", 3584), ("q_proj", 3584), ("v_proj", 512)):
            for ab, shape in (("lora_A", (32, 3584)), ("lora_B", (out, 32))):
                names.append(f"base_model.model.model.layers.{layer}.self_attn.{proj}.{ab}.weight")
                kinds.append((0, 0.0, shape))
    order = sorted(range(len(names)), key=names.__getitem__)
    data = encode_table([names[i] for i in order], [kinds[i] for i in order])
    assert len(data) < 8 * 224, len(data)


@pytest.mark.parametrize("density", [0.05, 0.1, 0.2])
def test_20m_parameter_224_tensor_lora_file_within_the_entropy_bound(tmp_path, density):
    """Issue 12 (small adapters): the whole file of a 20M-parameter, 224-tensor LoRA with evenly spread kept entries
    is at most 1.02 × H(k)·d bits + 4 KiB (the container written as compress writes it, from a golomb payload of
    uniformly spread signs)."""
    from compeft.artifact import scale_of
    from compeft.codecs import get_codec
    from compeft.container import write_container
    from compeft.document import Document, record_tensors
    from compeft.stats import entropy_bits_per_param
    from compeft.taskvector import DeltaRecord

    records, offset = [], 0
    shapes = {"k_proj": 512, "o_proj": 3584, "q_proj": 3584, "v_proj": 512}
    for name in sorted(f"base_model.model.model.layers.{i}.self_attn.{p}.{ab}.weight"
                       for i in range(28) for p in shapes for ab in ("lora_A", "lora_B")):
        proj = name.split(".")[-3]
        shape = (32, 3584) if ".lora_A." in name else (shapes[proj], 32)
        records.append(DeltaRecord(name, shape, "F32", 0.0, offset))
        offset += shape[0] * shape[1]
    d = offset
    assert len(records) == 224 and 20_000_000 < d < 20_500_000
    g = torch.Generator().manual_seed(0)
    kept = torch.rand(d, generator=g) < density
    signs = torch.where(torch.rand(d, generator=g) < 0.5, -1, 1).to(torch.int8) * kept
    payload = get_codec("golomb").encode(signs, [r.numel for r in records])
    sigma, scale = scale_of(1.0, 0.01)
    doc = Document(kind="adapter", codec="golomb", density=density, alpha=1.0, sigma=sigma, scale=scale, threshold=0.02,
                   d=d, kept=int(kept.sum()), carried=(), package_version="0.0.0",
                   source={"files": {"adapter_config.json": "0" * 64, "adapter_model.safetensors": "1" * 64},
                           "peft_type": "LORA", "base_model": "Qwen/Qwen2-7B", "bytes": 4 * d + 30_000})
    size = write_container(tmp_path / "c.safetensors", doc.to_json(records), payload, {}, record_tensors(records))
    bound = 1.02 * entropy_bits_per_param(density) * d / 8 + 4096
    assert size <= bound, f"k={density}: {size:,} bytes > {bound:,.0f}"
    assert size - payload.numel() < 3000, f"container overhead {size - payload.numel()} bytes"
