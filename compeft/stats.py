"""Size figures: the ComPEFT entropy bound H(k) and the paper's Golomb estimate (§2.2, footnote 2)."""

from __future__ import annotations

import math


def entropy_bits_per_param(k: float) -> float:
    """H(k) = −((1−k)·log2(1−k) + k·log2(k/2)): bits per parameter of a sparse ternary vector."""
    if k <= 0.0:
        return 0.0
    if k >= 1.0:
        return 1.0
    return -((1.0 - k) * math.log2(1.0 - k) + k * math.log2(k / 2.0))


def golomb_estimate_bits_per_param(k: float) -> float:
    """The paper's Golomb estimate: k·(b̄_pos + 1) with b̄_pos from footnote 2 (Strom; Sattler et al.)."""
    if k <= 0.0:
        return 0.0
    if k >= 1.0:
        return 2.0
    phi = (math.sqrt(5.0) + 1.0) / 2.0
    b_star = 1 + math.ceil(math.log2(math.log(phi - 1.0) / math.log(1.0 - k)))
    b_pos = b_star + 1.0 / (1.0 - (1.0 - k) ** (2**b_star))
    return k * (b_pos + 1.0)
