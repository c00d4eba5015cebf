"""Top-k threshold, σ and ternary pattern of a τ seen in blocks, twice (full fine-tunes larger than memory).

Pass 1 (``Pass1.add``): Στ and Στ² in float64 (a NaN or Inf makes them non-finite) and a histogram of the top
16 bits of |τ|'s float32 pattern over every SAMPLE-th entry; from it a *floor* below the m-th largest |τ| with a
wide margin (``Pass1.floor``). Pass 2 (``Pass2.block``): each block's *candidates*, the entries with |τ| ≥ floor
(position, |τ|'s bit pattern, sign), about 1.3·k·d of them, which the caller spills; a histogram of their top 16
bits is kept. After pass 2 the exact threshold t, the m-th largest |τ|, is the m-th largest candidate whenever
there are at least m candidates (``Pass2.enough``; otherwise pass 2 runs again with floor 1, every non-zero
entry): the boundary bin B from the histogram, then the rank inside B from the low 15 bits of B's candidates
(``threshold_bits``, one read of the spilled keys). An entry is kept iff |τ| ≥ t: the value
sparsify.threshold_bits finds in one array, and the same integer histograms on the CPU and on CUDA.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from compeft.errors import OptionError
from compeft.sparsify_cpu import HIGH_BINS, HIGH_SHIFT, LOW_MASK, rank_in_histogram

NORMAL = 0x00800000  # the smallest normal float32's bit pattern
SAMPLE = 16  # pass 1 histograms every SAMPLE-th entry of τ


def as_float32(raw: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A block of a tensor's little-endian bytes (uint8) as float32 values."""
    return raw.view(dtype).to(torch.float32)


def magnitude(tau: torch.Tensor) -> torch.Tensor:
    """|τ|'s float32 bit patterns (int32), ordered as the magnitudes are."""
    return tau.view(torch.int32) & 0x7FFFFFFF


class Pass1:
    """Στ, Στ² (float64) and the sampled 16-bit magnitude histogram, block by block."""

    def __init__(self) -> None:
        self.n, self.sampled, self.s1, self.s2 = 0, 0, 0.0, 0.0
        self.hist = torch.zeros(HIGH_BINS, dtype=torch.int64)
        self.wide = torch.empty(0, dtype=torch.float64)  # reused on the CPU (fresh blocks cost page faults)

    def add(self, tau: torch.Tensor) -> bool:
        """Count one block of float32 τ; False when it holds a NaN or an Inf."""
        if tau.device.type == "cpu":
            if self.wide.numel() < tau.numel():
                self.wide = torch.empty(tau.numel(), dtype=torch.float64)
            wide = self.wide[: tau.numel()].copy_(tau)
        else:
            wide = tau.to(torch.float64)
        sums = torch.stack([wide.sum(), torch.dot(wide, wide)]).cpu().tolist()
        sample = tau[::SAMPLE]
        self.hist += torch.bincount(magnitude(sample) >> HIGH_SHIFT, minlength=HIGH_BINS).cpu()
        self.n += tau.numel()
        self.sampled += sample.numel()
        self.s1 += sums[0]
        self.s2 += sums[1]
        return math.isfinite(sums[0]) and math.isfinite(sums[1])

    def sigma(self) -> float:
        """The unbiased standard deviation of everything added."""
        if self.n < 2:
            raise OptionError(f"the task vector has {self.n} entries; its standard deviation needs at least 2")
        mean = self.s1 / self.n
        return math.sqrt(max(self.s2 - mean * self.s1, 0.0) / (self.n - 1))

    def floor(self, m: int) -> int:
        """A |τ| bit pattern that about 1.25·m + a few standard deviations of the sample's count lie above: the
        candidates' floor (at least 1: zeros are never kept)."""
        expected = m * self.sampled / self.n
        target = int(1.25 * expected + 6 * math.sqrt(expected) + 64)
        if target >= self.sampled:
            return 1
        bin_index, _ = rank_in_histogram(self.hist.numpy(), target)
        return max(bin_index << HIGH_SHIFT, 1)


class Pass2:
    """The candidates of each block and the histogram of their top bits."""

    def __init__(self, floor: int, m: int) -> None:
        self.floor, self.m, self.count = floor, m, 0
        self.hist = torch.zeros(HIGH_BINS, dtype=torch.int64)
        self.scratch = (np.empty(0, np.float32), np.empty(0, bool))  # reused on the CPU

    def block(self, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(positions int64, |τ| bit patterns int32, negative bool) of one block's candidates, on the block's
        device (the CPU finds them with numpy: several times faster than torch.nonzero there)."""
        if tau.device.type == "cpu":
            x = tau.numpy()
            if self.scratch[0].size < x.size:
                self.scratch = (np.empty(x.size, np.float32), np.empty(x.size, bool))
            absolute, hits = self.scratch[0][: x.size], self.scratch[1][: x.size]
            if self.floor >= NORMAL:  # compared as floats: one op fewer than the bit patterns
                np.greater_equal(np.abs(x, out=absolute), np.array([self.floor], np.int32).view(np.float32)[0], out=hits)
            else:  # subnormal floors as integers, whatever the FPU's denormal mode
                np.greater_equal(x.view(np.int32) & 0x7FFFFFFF, self.floor, out=hits)
            pos = torch.from_numpy(np.flatnonzero(hits))
        else:
            pos = torch.nonzero(magnitude(tau) >= self.floor).reshape(-1)
        signed = tau.view(torch.int32)[pos]
        bits = signed & 0x7FFFFFFF
        self.hist += torch.bincount(bits >> HIGH_SHIFT, minlength=HIGH_BINS).cpu()
        self.count += pos.numel()
        return pos, bits, signed < 0

    def enough(self) -> bool:
        """True when the candidates hold the m-th largest |τ| (always with floor 1: fewer non-zeros than m make t = 0)."""
        return self.count >= self.m or self.floor <= 1

    def threshold_bits(self, keys: np.ndarray) -> int:
        """t's float32 bit pattern, the exact m-th largest |τ|, from the spilled candidate ``keys`` (bit patterns)."""
        if self.count < self.m:
            return 0
        bin_index, rank = rank_in_histogram(self.hist.numpy(), self.m)
        low = np.zeros(LOW_MASK + 1, dtype=np.int64)
        step = 1 << 22
        for a in range(0, keys.size, step):
            k = keys[a : a + step]
            low += np.bincount(k[(k >> HIGH_SHIFT) == bin_index] & LOW_MASK, minlength=LOW_MASK + 1)
        cut, _ = rank_in_histogram(low, rank)
        return (bin_index << HIGH_SHIFT) | cut
