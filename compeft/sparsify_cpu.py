"""CPU fast path of ternarize: cache-sized numpy blocks, split over threads, three passes over τ.

Large temporaries are what cost on the CPU (every fresh 100 MB array is page-faulted in), so each
pass walks τ in 1 Mi-entry blocks and keeps only small per-block results:
1. Στ (float64) and a 2^16-bin histogram of the top 16 bits of |τ|'s float32 pattern;
2. Σ(τ − mean)² (float64), and the low 15 bits of the entries in the boundary bin;
3. the int8 signs of the entries at or above the threshold.
The threshold is the exact m-th largest |τ| (the same value as sparsify.threshold_bits); σ is the
same two-pass unbiased standard deviation, equal to the torch path up to float64 rounding order.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from compeft.errors import OptionError

BLOCK = 1 << 20
HIGH_SHIFT = 15
HIGH_BINS = 1 << 16
LOW_MASK = (1 << HIGH_SHIFT) - 1


def _ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous block-aligned ranges covering [0, n)."""
    blocks = (n + BLOCK - 1) // BLOCK
    parts = max(1, min(parts, blocks))
    cuts = [BLOCK * (blocks * i // parts) for i in range(parts + 1)]
    cuts[-1] = n
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _map(fn, x: np.ndarray, threads: int) -> list:
    ranges = _ranges(x.size, threads)
    if len(ranges) == 1:
        return [fn(x, *ranges[0])]
    with ThreadPoolExecutor(len(ranges)) as pool:
        return list(pool.map(lambda r: fn(x, *r), ranges))


def _pass1(x: np.ndarray, a: int, b: int) -> tuple[float, np.ndarray]:
    total, hist = 0.0, np.zeros(HIGH_BINS, dtype=np.int64)
    for s in range(a, b, BLOCK):
        blk = x[s : min(b, s + BLOCK)]
        total += float(np.add.reduce(blk, dtype=np.float64))
        hist += np.bincount((blk.view(np.int32) & 0x7FFFFFFF) >> HIGH_SHIFT, minlength=HIGH_BINS)
    return total, hist


def _pass2(mean: float, bin_index: int):
    def run(x: np.ndarray, a: int, b: int) -> tuple[float, np.ndarray]:
        m2, lows = 0.0, []
        for s in range(a, b, BLOCK):
            blk = x[s : min(b, s + BLOCK)]
            dev = blk.astype(np.float64)
            dev -= mean
            m2 += float(np.dot(dev, dev))
            bits = blk.view(np.int32) & 0x7FFFFFFF
            lows.append(bits[(bits >> HIGH_SHIFT) == bin_index] & LOW_MASK)
        return m2, np.concatenate(lows) if lows else np.zeros(0, np.int32)

    return run


def _pass3(out: np.ndarray, t_bits: int):
    def run(x: np.ndarray, a: int, b: int) -> None:
        for s in range(a, b, BLOCK):
            e = min(b, s + BLOCK)
            blk = x[s:e]
            o = out[s:e]
            np.subtract(blk > 0, blk < 0, out=o, dtype=np.int8)
            o *= (blk.view(np.int32) & 0x7FFFFFFF) >= t_bits

    return run


def rank_in_histogram(counts: np.ndarray, rank: int) -> tuple[int, int]:
    """The bin holding the rank-th largest entry (1-based), and its rank inside that bin."""
    from_top = np.cumsum(counts[::-1])
    i = int(np.searchsorted(from_top, rank))
    bin_index = counts.size - 1 - i
    above = int(from_top[i]) - int(counts[bin_index])
    return bin_index, rank - above


def ternarize_cpu(tau: torch.Tensor, m: int, threads: int | None = None) -> tuple[torch.Tensor, float, int]:
    """(int8 signs, unbiased σ, float32 bit pattern of the m-th largest |τ|) for a flat float32 CPU τ."""
    x = tau.detach().to(torch.float32).contiguous().numpy()
    n = x.size
    if n < 2:
        raise OptionError(f"the task vector has {n} entries; its standard deviation needs at least 2")
    threads = threads or torch.get_num_threads()
    parts = _map(_pass1, x, threads)
    mean = sum(p[0] for p in parts) / n
    hist = np.sum([p[1] for p in parts], axis=0)
    bin_index, rank = rank_in_histogram(hist, m)
    parts2 = _map(_pass2(mean, bin_index), x, threads)
    m2 = sum(p[0] for p in parts2)
    lows = np.concatenate([p[1] for p in parts2])
    low, _ = rank_in_histogram(np.bincount(lows, minlength=1 << HIGH_SHIFT), rank)
    t_bits = (bin_index << HIGH_SHIFT) | low
    signs = np.empty(n, dtype=np.int8)
    _map(_pass3(signs, t_bits), x, threads)
    return torch.from_numpy(signs), math.sqrt(m2 / (n - 1)), t_bits
