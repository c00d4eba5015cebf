"""Exact global top-k threshold, σ and the ternary pattern (ComPEFT Algorithm 1).

The threshold t is the m-th largest |τ| with m = ceil(k·d), found without sorting by a two-level
radix select on the float32 bit patterns of |τ| (monotone for non-negative floats): a histogram of
the top 23 bits, then of the low 8 bits inside the one boundary bin. Integer histograms give the same
answer on CPU and CUDA, and the same histograms stream over shards for full fine-tunes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import torch

from compeft.config import check_density
from compeft.errors import OptionError

LOW_BITS = 8
HIGH_BINS = 1 << (31 - LOW_BITS)
LOW_BINS = 1 << LOW_BITS
CHUNK = 1 << 24
SMALL = 1 << 18


def kept_count(density: float, d: int) -> int:
    """m = ceil(k·d), exact for the decimal k the user wrote (0.07·100 keeps 7, not the float's 8)."""
    return max(1, min(d, math.ceil(Fraction(repr(check_density(density))) * d)))


def magnitude_bits(values: torch.Tensor) -> torch.Tensor:
    """float32 bit patterns of |values| as int32; their order is the order of the magnitudes."""
    return values.to(torch.float32).abs().view(torch.int32)


class Moments:
    """Streaming count, mean and sum of squared deviations in float64 (Chan et al. merge)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, values: torch.Tensor) -> None:
        for start in range(0, values.numel(), CHUNK):
            chunk = values[start : start + CHUNK].to(torch.float64)
            n = chunk.numel()
            mean = float(chunk.mean())
            m2 = float(((chunk - mean) ** 2).sum())
            total = self.n + n
            delta = mean - self.mean
            self.mean += delta * n / total
            self.m2 += m2 + delta * delta * self.n * n / total
            self.n = total

    def std(self) -> float:
        """Unbiased standard deviation (n − 1 in the denominator)."""
        if self.n < 2:
            raise OptionError(f"the task vector has {self.n} entries; its standard deviation needs at least 2")
        return math.sqrt(self.m2 / (self.n - 1))


class MagnitudeHistogram:
    """Counts of |τ| by the top 23 bits of their float32 pattern, accumulated chunk by chunk."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.counts = torch.zeros(HIGH_BINS, dtype=torch.int64, device=device)

    def add(self, bits: torch.Tensor) -> None:
        for start in range(0, bits.numel(), CHUNK):
            index = (bits[start : start + CHUNK] >> LOW_BITS).to(torch.int64)
            if index.numel() < SMALL:
                # a full-width bincount costs O(bins); small tensors (norms, biases) sort instead
                bins, counts = torch.unique(index, return_counts=True)
                self.counts.index_add_(0, bins, counts)
            else:
                self.counts += torch.bincount(index, minlength=HIGH_BINS)

    def locate(self, m: int) -> tuple[int, int]:
        """The bin holding the m-th largest value, and that value's rank (1-based) inside the bin."""
        from_top = self.counts.flip(0).cumsum(0)
        i = int(torch.searchsorted(from_top, torch.tensor([m], device=from_top.device)).item())
        bin_index = HIGH_BINS - 1 - i
        above = int(from_top[i].item()) - int(self.counts[bin_index].item())
        return bin_index, m - above


def select_in_bin(low_values: torch.Tensor, rank: int) -> int:
    """The rank-th largest (1-based) of the low 8-bit values of the entries in the boundary bin."""
    counts = torch.bincount(low_values.to(torch.int64), minlength=LOW_BINS)
    from_top = counts.flip(0).cumsum(0)
    i = int(torch.searchsorted(from_top, torch.tensor([rank], device=from_top.device)).item())
    return LOW_BINS - 1 - i


def threshold_bits(bits: torch.Tensor, m: int) -> int:
    """Bit pattern of the m-th largest magnitude among ``bits`` (int32 patterns of |τ|)."""
    hist = MagnitudeHistogram(bits.device)
    hist.add(bits)
    bin_index, rank = hist.locate(m)
    low = bits[(bits >> LOW_BITS) == bin_index] & (LOW_BINS - 1)
    return (bin_index << LOW_BITS) | select_in_bin(low, rank)


def bits_to_float(bits: int) -> float:
    """The float32 value of a non-negative int32 bit pattern."""
    return float(torch.tensor([bits], dtype=torch.int32).view(torch.float32).item())


def ternary_from_bits(values: torch.Tensor, bits: torch.Tensor, t_bits: int) -> torch.Tensor:
    """sign(τ)·[|τ| ≥ t] as int8."""
    return torch.where(bits >= t_bits, torch.sign(values), torch.zeros((), dtype=values.dtype, device=values.device)).to(torch.int8)


@dataclass(frozen=True)
class Ternary:
    """The sparse ternary pattern of τ with the statistics the container records."""

    signs: torch.Tensor  # int8 in {-1, 0, 1}, same length and device as τ
    sigma: float  # unbiased std of the dense τ
    threshold: float  # the m-th largest |τ|
    kept: int  # non-zero entries of signs

    @property
    def d(self) -> int:
        return int(self.signs.numel())


def ternarize(tau: torch.Tensor, density: float) -> Ternary:
    """Keep the top ceil(k·d) magnitudes of τ (ties keep a few more) as signs, and measure σ."""
    d = tau.numel()
    m = kept_count(density, d)
    if tau.device.type == "cpu":
        from compeft.sparsify_cpu import ternarize_cpu

        signs, sigma, t_bits = ternarize_cpu(tau.reshape(-1), m)
        kept = int(torch.count_nonzero(signs).item())
        return Ternary(signs, sigma, bits_to_float(t_bits), kept)
    moments = DeviceMoments()
    moments.add(tau)
    sigma = moments.std()
    bits = magnitude_bits(tau)
    t_bits = threshold_bits(bits, m)
    signs = ternary_from_bits(tau, bits, t_bits)
    kept = int(torch.count_nonzero(signs).item())
    return Ternary(signs, sigma, bits_to_float(t_bits), kept)


class DeviceMoments(Moments):
    """Moments with the same per-chunk arithmetic and merge order, but one device sync in all."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[torch.Tensor] = []
        self.sizes: list[int] = []

    def add(self, values: torch.Tensor) -> None:
        for start in range(0, values.numel(), CHUNK):
            chunk = values[start : start + CHUNK].to(torch.float64)
            mean = chunk.mean()
            self.parts.append(torch.stack([mean, ((chunk - mean) ** 2).sum()]))
            self.sizes.append(chunk.numel())

    def std(self) -> float:
        if self.parts:
            for n, (mean, m2) in zip(self.sizes, torch.stack(self.parts).cpu().tolist()):
                total = self.n + n
                delta = mean - self.mean
                self.mean += delta * n / total
                self.m2 += m2 + delta * delta * self.n * n / total
                self.n = total
            self.parts, self.sizes = [], []
        return super().std()
