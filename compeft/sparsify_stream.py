"""Top-k threshold, σ and ternary pattern of a τ seen in blocks, twice (full fine-tunes larger than memory).

Pass 1 (``Pass1.add``) reads only a sample, 1/SAMPLE of τ in runs of SAMPLE_PIECE entries (``sample_ranges``: the
reads skip 15/16 of the bytes, where every SAMPLE-th entry would touch every page): a histogram of the top 16
bits of |τ|'s float32 pattern, and from it a *floor* below the m-th largest |τ| with a wide margin (``Pass1.floor``). Pass 2
reads all of τ: Στ and Στ² in float64 (``Moments``; a NaN or Inf makes them non-finite), and each block's
*candidates* (``Pass2.block``), the entries with |τ| ≥ floor (position, τ's signed bit pattern), about 1.3·k·d
of them, which the caller spills; a histogram of their top 16 bits is kept. After pass 2 the exact threshold t,
the m-th largest |τ|, is the m-th largest candidate whenever there are at least m candidates (``Pass2.enough``;
otherwise pass 2 runs again with floor 1, every non-zero entry): the boundary bin B from the histogram, then the
rank inside B from the low 15 bits of B's candidates (``threshold_bits``, one read of the spilled patterns). An
entry is kept iff |τ| ≥ t: the value sparsify.threshold_bits finds in one array, and the same integer
histograms on the CPU and on CUDA.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from compeft.errors import OptionError
from compeft.sparsify_cpu import HIGH_BINS, HIGH_SHIFT, LOW_MASK, rank_in_histogram

NORMAL = 0x00800000  # the smallest normal float32's bit pattern
SAMPLE = 16  # pass 1 histograms 1/SAMPLE of τ
SAMPLE_PIECE = 1 << 14  # entries read together: the first SAMPLE_PIECE of every SAMPLE·SAMPLE_PIECE


def sample_ranges(a: int, b: int) -> list[tuple[int, int]]:
    """The sampled entry ranges of entries a..b of a tensor (a on a stride): the first 1/SAMPLE of each
    SAMPLE·SAMPLE_PIECE-entry stride, rounded up (so every tensor, however small, is sampled at about 1/SAMPLE)."""
    stride = SAMPLE * SAMPLE_PIECE
    return [(i, i + min(SAMPLE_PIECE, -(-(b - i) // SAMPLE))) for i in range(a, b, stride)]


def magnitude(tau: torch.Tensor) -> torch.Tensor:
    """|τ|'s float32 bit patterns (int32), ordered as the magnitudes are."""
    return tau.view(torch.int32) & 0x7FFFFFFF


class Pass1:
    """The 16-bit magnitude histogram of a sample of τ (``sample_ranges``), and the candidates' floor."""

    def __init__(self) -> None:
        self.n, self.sampled = 0, 0
        self.counts = torch.zeros(HIGH_BINS, dtype=torch.int64)

    def add(self, sample: torch.Tensor, n: int) -> None:
        """Count the float32 ``sample`` taken from ``n`` entries of τ (on the sample's device: no sync per piece)."""
        if self.counts.device != sample.device:
            self.counts = self.counts.to(sample.device)
        self.counts += torch.bincount(magnitude(sample) >> HIGH_SHIFT, minlength=HIGH_BINS)
        self.n += n
        self.sampled += sample.numel()

    @property
    def hist(self) -> torch.Tensor:
        """The histogram on the host."""
        if self.counts.device.type != "cpu":
            self.counts = self.counts.cpu()
        return self.counts

    def above(self, floor: int) -> int:
        """About how many entries of τ have a |τ| bit pattern at or above ``floor`` (the sample's count, scaled)."""
        return int(self.hist[floor >> HIGH_SHIFT :].sum()) * self.n // max(self.sampled, 1)

    def floor(self, m: int) -> int:
        """A |τ| bit pattern that about 1.25·m + a few standard deviations of the sample's count lie above: the
        candidates' floor (at least 1: zeros are never kept)."""
        expected = m * self.sampled / self.n
        target = int(1.25 * expected + 6 * math.sqrt(expected) + 64)
        if target >= self.sampled:
            return 1
        bin_index, _ = rank_in_histogram(self.hist.numpy(), target)
        return max(bin_index << HIGH_SHIFT, 1)


class Moments:
    """Στ, Στ² (float64) of τ, block by block, and σ from them."""

    def __init__(self) -> None:
        self.n, self.s1, self.s2 = 0, 0.0, 0.0
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
        self.n += tau.numel()
        self.s1 += sums[0]
        self.s2 += sums[1]
        return math.isfinite(sums[0]) and math.isfinite(sums[1])

    def sigma(self) -> float:
        """The unbiased standard deviation of everything added."""
        if self.n < 2:
            raise OptionError(f"the task vector has {self.n} entries; its standard deviation needs at least 2")
        mean = self.s1 / self.n
        return math.sqrt(max(self.s2 - mean * self.s1, 0.0) / (self.n - 1))


class Pass2:
    """The candidates of each block and the histogram of their top bits."""

    def __init__(self, floor: int, m: int) -> None:
        self.floor, self.m, self.count = floor, m, 0
        self.hist = np.zeros(HIGH_BINS, dtype=np.int64)
        self.scratch = (np.empty(0, np.float32), np.empty(0, bool))  # reused on the CPU

    def block(self, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions int64, τ's float32 bit patterns int32, sign bit included) of one block's candidates, on
        the block's device (the CPU finds them with numpy: several times faster than torch.nonzero there)."""
        if tau.device.type == "cpu":
            x = tau.numpy()
            if self.scratch[0].size < x.size:
                self.scratch = (np.empty(x.size, np.float32), np.empty(x.size, bool))
            absolute, hits = self.scratch[0][: x.size], self.scratch[1][: x.size]
            if self.floor >= NORMAL:  # compared as floats: one op fewer than the bit patterns
                np.greater_equal(np.abs(x, out=absolute), np.array([self.floor], np.int32).view(np.float32)[0], out=hits)
            else:  # subnormal floors as integers, whatever the FPU's denormal mode
                np.greater_equal(x.view(np.int32) & 0x7FFFFFFF, self.floor, out=hits)
            pos = np.flatnonzero(hits)
            signed = x.view(np.int32).take(pos)
            if pos.size:  # the candidates' bins lie at or above the floor's: count only that range
                low = self.floor >> HIGH_SHIFT
                high = ((signed.view(np.uint32) << np.uint32(1)) >> np.uint32(HIGH_SHIFT + 1)).astype(np.intp)
                counts = np.bincount(high - low)
                self.hist[low : low + counts.size] += counts
            self.count += pos.size
            return torch.from_numpy(pos), torch.from_numpy(signed)
        pos = torch.nonzero(magnitude(tau) >= self.floor).reshape(-1)
        signed = tau.view(torch.int32)[pos]
        self.hist += torch.bincount((signed & 0x7FFFFFFF) >> HIGH_SHIFT, minlength=HIGH_BINS).cpu().numpy()
        self.count += pos.numel()
        return pos, signed

    def enough(self) -> bool:
        """True when the candidates hold the m-th largest |τ| (always with floor 1: fewer non-zeros than m make t = 0)."""
        return self.count >= self.m or self.floor <= 1

    def threshold_bits(self, patterns: Iterable[np.ndarray | torch.Tensor]) -> int:
        """t's float32 bit pattern, the exact m-th largest |τ|, from the candidates' bit ``patterns`` (int32, sign
        bit included; read in pieces from the spill files, or tensors on the device)."""
        if self.count < self.m:
            return 0
        bin_index, rank = rank_in_histogram(self.hist, self.m)
        low = np.zeros(LOW_MASK + 1, dtype=np.int64)
        for k in patterns:
            if isinstance(k, torch.Tensor):  # candidates kept on a device
                mine = k[((k & 0x7FFFFFFF) >> HIGH_SHIFT) == bin_index] & LOW_MASK
                low += torch.bincount(mine, minlength=LOW_MASK + 1).cpu().numpy()
                continue
            high = (k.view(np.uint32) << np.uint32(1)) >> np.uint32(HIGH_SHIFT + 1)  # the sign bit shifted out
            low += np.bincount(k[high == bin_index] & LOW_MASK, minlength=LOW_MASK + 1)
        cut, _ = rank_in_histogram(low, rank)
        return (bin_index << HIGH_SHIFT) | cut
