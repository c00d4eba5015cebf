"""Top-k threshold, σ and ternary pattern of a τ seen in blocks, twice (full fine-tunes larger than memory).

Pass 1 (``Pass1.add``): Στ and Στ² in float64 and a 2^16-bin histogram of the top 16 bits of |τ|'s float32
pattern; after it, the boundary bin B that holds the m-th largest |τ| and that entry's rank r inside B.
Pass 2 (``Pass2.block``): each block's *candidates*, the entries at or above bin B (position, key = the low 15
bits for entries of B and 0xFFFF above it, sign), and a 2^15-bin histogram of the low bits of B's entries; then
the exact cut (``Pass2.threshold_bits``): the r-th largest low value of B. An entry is kept iff |τ| ≥ t = B·2^15 +
cut, i.e. iff its key ≥ cut, so the candidates (about k·d entries, spilled by the caller) are all that pass 2
keeps. t is the exact m-th largest |τ|, the value sparsify.threshold_bits finds in one array. The same torch
ops run on the CPU and on CUDA (integer histograms: identical results).
"""

from __future__ import annotations

import math

import torch

from compeft.errors import OptionError
from compeft.sparsify_cpu import HIGH_BINS, HIGH_SHIFT, LOW_MASK, rank_in_histogram

ABOVE = 0xFFFF  # the key of a candidate above the boundary bin (every low value is at most LOW_MASK)
NONFINITE_BIN = 0x7F800000 >> HIGH_SHIFT  # |τ| bit patterns from here up are Inf and NaN


def as_float32(raw: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A block of a tensor's little-endian bytes (uint8) as float32 values."""
    return raw.view(dtype).to(torch.float32)


def magnitude(tau: torch.Tensor) -> torch.Tensor:
    """|τ|'s float32 bit patterns (int32), ordered as the magnitudes are."""
    return tau.view(torch.int32) & 0x7FFFFFFF


class Pass1:
    """Στ, Στ² (float64) and the 16-bit magnitude histogram, block by block."""

    def __init__(self) -> None:
        self.n, self.s1, self.s2 = 0, 0.0, 0.0
        self.hist = torch.zeros(HIGH_BINS, dtype=torch.int64)

    def add(self, tau: torch.Tensor) -> bool:
        """Count one block of float32 τ; False when it holds a NaN or an Inf."""
        wide = tau.to(torch.float64)
        sums = torch.stack([wide.sum(), torch.dot(wide, wide)]).cpu().tolist()
        counts = torch.bincount(magnitude(tau) >> HIGH_SHIFT, minlength=HIGH_BINS).cpu()
        self.hist += counts
        self.n += tau.numel()
        self.s1 += sums[0]
        self.s2 += sums[1]
        return not bool(counts[NONFINITE_BIN:].any())

    def sigma(self) -> float:
        """The unbiased standard deviation of everything added."""
        if self.n < 2:
            raise OptionError(f"the task vector has {self.n} entries; its standard deviation needs at least 2")
        mean = self.s1 / self.n
        return math.sqrt(max(self.s2 - mean * self.s1, 0.0) / (self.n - 1))

    def boundary(self, m: int) -> tuple[int, int]:
        """(bin B holding the m-th largest |τ|, its rank inside B)."""
        return rank_in_histogram(self.hist.numpy(), m)


class Pass2:
    """The candidates of each block and the low-bit histogram of the boundary bin."""

    def __init__(self, bin_index: int, rank: int) -> None:
        self.bin_index, self.rank = bin_index, rank
        self.floor = max(bin_index << HIGH_SHIFT, 1)  # zeros are never kept, even when t = 0
        self.low = torch.zeros(LOW_MASK + 1, dtype=torch.int64)

    def block(self, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(positions int64, keys int32, negative bool) of one block's candidates, on the block's device."""
        bits = magnitude(tau)
        pos = torch.nonzero(bits >= self.floor).reshape(-1)
        cand = bits[pos]
        inside = (cand >> HIGH_SHIFT) == self.bin_index
        low = cand & LOW_MASK
        self.low += torch.bincount(low[inside], minlength=LOW_MASK + 1).cpu()
        if self.bin_index == 0:  # zeros are in bin 0 but not candidates: count them here
            self.low[0] += int((bits == 0).sum())
        key = torch.where(inside, low, torch.full_like(low, ABOVE))
        return pos, key, tau.view(torch.int32)[pos] < 0

    def threshold_bits(self) -> int:
        """t's float32 bit pattern: the exact m-th largest |τ|."""
        cut, _ = rank_in_histogram(self.low.numpy(), self.rank)
        return (self.bin_index << HIGH_SHIFT) | cut
