"""The Triton golomb decode's plan: per-chunk parameters in one int64 host array (numpy only).

Layout of the array (the kernels in golomb_triton index it with the row constants below):
    N_ROWS rows of K entries (one entry per chunk, row-major)    chunk parameters, tiles included
    zeros up to a multiple of 8 entries, then 8 zeros            error flags (N_ERRORS used), set by the device
    3 slots                                                      the value table's bytes (v₋₁, v₀, v₊₁)
One host → device copy per decode brings all of it, the error flags already zeroed. Each chunk's codes
are cut into tiles of ``code_block`` codes and its unary plane into tiles of ``byte_block`` bytes; the
tiles are numbered in chunk order (the device fills in each tile's chunk id from TILE0/NTILES and
BTILE0/NBTILES, rather than the host building per-tile arrays).
"""

from __future__ import annotations

import numpy as np
import torch

# chunk rows
CNT, FIRST, M, U, W, LOW, EXTRA, SIGN, START, LEN, UBYTE, UBYTES, XBITS, TILE0, NTILES, BTILE0, NBTILES = range(17)
N_ROWS = 17
# error flags, in the order their messages are raised (the first set one wins)
ERROR_MESSAGES = (
    "golomb chunk unary stream has a code count other than its table's",
    "golomb chunk unary stream has trailing bytes",
    "golomb chunk has non-zero padding bits",
    "golomb chunk extra-bit count differs from its table",
    "golomb chunk position is past its length",
)
N_ERRORS = len(ERROR_MESSAGES)


def tiles(sizes: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(first tile of each chunk, tiles of each chunk) for chunks of ``sizes`` cut into tiles of ``block``."""
    per = (sizes + block - 1) // block
    return np.cumsum(per) - per, per


class PlanColumns:
    """The plan of decoding the mode-0 chunks ``ids`` of ``table`` (golomb_fast.Table) into ``values``'
    dtype. ``alloc(n)`` returns an int64 torch tensor of n entries (e.g. page-locked); ``tensor`` is
    what goes to the device, ``host`` its numpy view."""

    def __init__(self, table, ids: np.ndarray, code_block: int, byte_block: int, values: torch.Tensor, alloc=None) -> None:
        cnt = table.count[ids]
        self.n = int(cnt.sum())
        self.K = len(ids)
        m = table.m[ids]
        unary = table.unary_bytes[ids]
        code_tile0, code_tiles = tiles(cnt, code_block)
        byte_tile0, byte_tiles = tiles(unary, byte_block)
        self.n_tiles, self.nb_tiles = int(code_tiles.sum()), int(byte_tiles.sum())
        rows = [
            cnt, np.cumsum(cnt) - cnt, m, np.where(m > 1, table.u[ids], 1 << 40), table.width[ids],
            8 * table.low_off[ids], 8 * table.extra_off[ids], 8 * table.sign_off[ids], table.start[ids], table.length[ids],
            table.unary_off[ids], unary, table.extra_bits[ids], code_tile0, code_tiles, byte_tile0, byte_tiles,
        ]
        self.errors_at = -(-N_ROWS * self.K // 8) * 8  # aligned (Triton specializes kernels on pointer alignment)
        self.values_at = self.errors_at + 8
        size = self.values_at + 3
        self.tensor = torch.empty(size, dtype=torch.int64) if alloc is None else alloc(size)
        self.host = self.tensor.numpy()
        np.concatenate(rows, out=self.host[: N_ROWS * self.K])
        self.host[N_ROWS * self.K :] = 0
        raw = values.detach().cpu().contiguous().view(torch.uint8).numpy()
        self.host[self.values_at :].view(np.uint8)[: raw.size] = raw
        self.dtype = values.dtype
