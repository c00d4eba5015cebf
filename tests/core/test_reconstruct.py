"""The one reconstruction: its value-table and fused many-tensor forms give exactly its values."""

from __future__ import annotations

import pytest
import torch

from compeft.artifact import reconstruct, reconstruct_into, value_table

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@pytest.mark.parametrize("stored", DTYPES)
@pytest.mark.parametrize("target_dtype", DTYPES)
@pytest.mark.parametrize("theta", [0.0, 1.0, "tensor"])
def test_fused_write_equals_reconstruct_then_copy(stored, target_dtype, theta):
    g = torch.Generator().manual_seed(hash((str(stored), str(target_dtype), str(theta))) % 1000)
    shapes = [(3, 5), (7,), (2, 2, 4)]
    ternaries = [torch.randint(-1, 2, s, generator=g, dtype=torch.int8) for s in shapes]
    scale = 0.0137
    if theta == "tensor":
        inits = [torch.randn(s, generator=g) for s in shapes]
    elif theta:
        inits = [torch.full(s, theta) for s in shapes]
    else:
        inits = None
    expected = []
    for i, t in enumerate(ternaries):
        value = reconstruct(t, scale, inits[i] if inits is not None else 0.0, stored)
        expected.append(value.to(target_dtype))
    targets = [torch.empty(s, dtype=target_dtype) for s in shapes]
    patterns = [t.to(torch.float32 if inits is not None else target_dtype) for t in ternaries]
    reconstruct_into(targets, patterns, scale, inits, stored)
    for got, want in zip(targets, expected):
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("theta", [0.0, 1.0, -0.5])
def test_value_table_is_reconstruct_of_minus_one_zero_one(dtype, theta):
    table = value_table(0.25, theta, dtype)
    assert torch.equal(table, reconstruct(torch.tensor([-1, 0, 1], dtype=torch.int8), 0.25, theta, dtype))
    t = torch.randint(-1, 2, (100,), generator=torch.Generator().manual_seed(0), dtype=torch.int8)
    assert torch.equal(table[(t + 1).long()], reconstruct(t, 0.25, theta, dtype))
