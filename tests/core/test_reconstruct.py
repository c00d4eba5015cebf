"""The one reconstruction: its value-table and fused many-tensor forms give exactly its values."""

from __future__ import annotations

import pytest
import torch

from compeft.artifact import fused_pattern, reconstruct, reconstruct_into, value_table

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@pytest.mark.parametrize("stored", DTYPES)
@pytest.mark.parametrize("target_dtype", DTYPES)
@pytest.mark.parametrize("theta", [0.0, 1.0, -0.0, "tensor"])
def test_fused_write_equals_reconstruct_then_copy(stored, target_dtype, theta):
    g = torch.Generator().manual_seed(hash((str(stored), str(target_dtype), str(theta))) % 1000)
    shapes = [(3, 5), (7,), (2, 2, 4)]
    ternaries = [torch.randint(-1, 2, s, generator=g, dtype=torch.int8) for s in shapes]
    scale = 0.0137
    if theta == "tensor":
        inits = [torch.randn(s, generator=g) for s in shapes]
        for init in inits:
            init.view(-1)[::3] = -0.0
    elif theta or str(theta) == "-0.0":
        inits = [torch.full(s, theta) for s in shapes]
    else:
        inits = None
    expected = []
    for i, t in enumerate(ternaries):
        value = reconstruct(t, scale, inits[i] if inits is not None else 0.0, stored)
        expected.append(value.to(target_dtype))
    targets = [torch.empty(s, dtype=target_dtype) for s in shapes]
    patterns = [fused_pattern(t, target_dtype, inits is not None) for t in ternaries]
    reconstruct_into(targets, patterns, scale, inits, stored)
    for got, want in zip(targets, expected):
        assert same_bits(got, want)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_dropped_entry_keeps_theta_inits_bits(dtype):
    """Where t = 0 the reconstruction is θ_init itself, −0.0 included (+ 0.0 would turn it into +0.0); kept entries
    are θ_init ± s rounded once, and a θ_init of 0 gives +0.0."""
    theta = torch.tensor([-0.0, -0.0, 0.0, 0.5, -0.0, 3.0]).to(dtype)
    t = torch.tensor([0, 1, 0, 0, -1, -1], dtype=torch.int8)
    got = reconstruct(t, 0.25, theta, dtype)
    want = torch.tensor([-0.0, 0.25, 0.0, 0.5, -0.25, 2.75]).to(dtype)
    assert same_bits(got, want)
    assert same_bits(reconstruct(t, 0.25, 0.0, dtype), torch.tensor([0.0, 0.25, 0.0, 0.0, -0.25, -0.25]).to(dtype))
    assert same_bits(reconstruct(t, 0.25, -0.0, dtype), torch.tensor([-0.0, 0.25, -0.0, -0.0, -0.25, -0.25]).to(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("theta", [0.0, 1.0, -0.5, -0.0])
def test_value_table_is_reconstruct_of_minus_one_zero_one(dtype, theta):
    table = value_table(0.25, theta, dtype)
    assert same_bits(table, reconstruct(torch.tensor([-1, 0, 1], dtype=torch.int8), 0.25, theta, dtype))
    assert same_bits(table[1:2], torch.tensor([theta], dtype=dtype))
    t = torch.randint(-1, 2, (100,), generator=torch.Generator().manual_seed(0), dtype=torch.int8)
    assert same_bits(table[(t + 1).long()], reconstruct(t, 0.25, theta, dtype))
