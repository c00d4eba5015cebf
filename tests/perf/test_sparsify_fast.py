"""The CPU fast ternarize equals the torch reference path: threshold bits, signs and float32 σ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compeft import sparsify as sp
from compeft.sparsify_cpu import ternarize_cpu


def reference(tau: torch.Tensor, density: float):
    m = sp.kept_count(density, tau.numel())
    moments = sp.Moments()
    moments.add(tau)
    bits = sp.magnitude_bits(tau)
    t_bits = sp.threshold_bits(bits, m)
    return sp.ternary_from_bits(tau, bits, t_bits), moments.std(), t_bits


@pytest.mark.parametrize("seed", range(30))
def test_cpu_ternarize_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 2_500_000 if seed % 5 == 0 else 4000, (1,), generator=g))
    tau = torch.randn(n, generator=g) * float(torch.rand(1, generator=g) + 1e-3)
    if seed % 3 == 0:
        tau = tau.to(torch.bfloat16).float()  # many ties
    if seed % 4 == 0:
        tau[:: 1 + seed % 3] = 0.0
    density = float(torch.rand(1, generator=g)) if seed % 7 else 1.0
    signs, sigma, t_bits = reference(tau, density)
    fast_signs, fast_sigma, fast_bits = ternarize_cpu(tau, sp.kept_count(density, n), threads=1 + seed % 3)
    assert fast_bits == t_bits
    assert torch.equal(fast_signs, signs)
    assert np.float32(fast_sigma) == np.float32(sigma)
    tern = sp.ternarize(tau, density)
    assert torch.equal(tern.signs, signs) and tern.threshold == sp.bits_to_float(t_bits)
    assert tern.kept == int(torch.count_nonzero(signs))


def test_device_moments_match_moments():
    tau = torch.randn(3 * sp.CHUNK // 2 + 5, generator=torch.Generator().manual_seed(3))
    a, b = sp.Moments(), sp.DeviceMoments()
    a.add(tau)
    b.add(tau)
    assert a.std() == b.std()
