"""A small signature of an artifact's ternary pattern for searching a registry: a signed count sketch.

Version 1 (normative): for each kept position i of τ (0-based, over all records), z = splitmix64(i) (the
finaliser of Steele et al.'s SplitMix64 applied to i + 0x9E3779B97F4A7C15, arithmetic mod 2^64); the bucket is
z mod M (M = 2048) and the sign g = +1 when bit 32 of z is 0, else −1. The sketch is y_b = Σ_{i: bucket = b} g·t_i,
divided by √|S|, stored as M little-endian float16. For two artifacts of one layout, y_A·y_B is an unbiased
estimate of their cosine with a standard deviation of about √((1 + cos²)/M), 0.022–0.031: a registry shortlists
candidates with it and re-ranks them exactly from the bit planes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compeft.ops.planes import TernaryPlanes

SKETCH_VERSION = 1
SKETCH_SIZE = 2048
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
CHUNK_WORDS = 1 << 16


@dataclass(frozen=True)
class Signature:
    """What a registry keeps to find an artifact's neighbours: its layout, size, support and sketch."""

    layout: str
    d: int
    kept: int
    sketch: np.ndarray  # float16 [SKETCH_SIZE], unit norm in expectation
    version: int = SKETCH_VERSION

    def to_bytes(self) -> bytes:
        return self.sketch.astype("<f2").tobytes()

    @staticmethod
    def sketch_from_bytes(data: bytes) -> np.ndarray:
        """The float32 sketch of ``to_bytes``' output."""
        return np.frombuffer(data, dtype="<f2").astype(np.float32)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output for states x (uint64, wrapping arithmetic)."""
    z = x + GOLDEN
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


def sketch_of(planes: TernaryPlanes) -> Signature:
    """The signature of an artifact's planes (computed on the CPU, chunk by chunk)."""
    support = planes.support.cpu().contiguous().numpy().view(np.uint8)
    negative = planes.negative.cpu().contiguous().numpy().view(np.uint8)
    y = np.zeros(SKETCH_SIZE, dtype=np.float64)
    step = CHUNK_WORDS * 8
    for start in range(0, support.size, step):
        bits = np.unpackbits(support[start : start + step], bitorder="little")
        local = np.flatnonzero(bits)
        if not local.size:
            continue
        neg = np.unpackbits(negative[start : start + step], bitorder="little")[local]
        z = splitmix64(local.astype(np.uint64) + np.uint64(start * 8))
        bucket = (z & np.uint64(SKETCH_SIZE - 1)).astype(np.int64)
        g = 1.0 - 2.0 * ((z >> np.uint64(32)) & np.uint64(1)).astype(np.float64)
        y += np.bincount(bucket, weights=g * (1.0 - 2.0 * neg), minlength=SKETCH_SIZE)
    if planes.kept:
        y /= np.sqrt(planes.kept)
    return Signature(planes.layout, planes.d, planes.kept, y.astype(np.float16))


def estimate(query: np.ndarray, sketches: np.ndarray) -> np.ndarray:
    """Estimated cosines of a query sketch with a matrix of sketches [n, SKETCH_SIZE] (float32)."""
    return sketches.astype(np.float32, copy=False) @ query.astype(np.float32, copy=False)
