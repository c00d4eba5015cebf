"""Triton decode of ``golomb`` payloads on CUDA: five fused passes instead of ~40 torch kernels.

Closed form used: with s_j the bit index of code j's unary stop inside its chunk, the sum of the
quotients up to j is s_j − j, so the position of code j is p_j = M·(s_j − j) + R_j + j, where R_j is
the inclusive sum of the remainders. Everything else is a tile-local scan plus a per-chunk carry:
  U1  popcount of each tile of unary bytes           → torch segmented scan → code offset per tile
  U2  write s_j for every one bit (select)
  P1  count the codes with an extra bit per tile     → torch segmented scan → extra-bit offset per tile
  P2  remainders, their sum per tile                 → torch segmented scan → remainder offset per tile
  P3  positions, signs, the value written in place, range checks
Tiles never straddle chunks, so each scan's carry is a cumsum over tile sums minus the chunk's first.
Mode-1 chunks and validation of the table are left to golomb_fast (same checks, same errors).
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from compeft.codecs.golomb_fast import PlanColumns

CODE_BLOCK = 1024
BYTE_BLOCK = 2048


@triton.jit
def _popcount8(x):
    x = x - ((x >> 1) & 0x55)
    x = (x & 0x33) + ((x >> 2) & 0x33)
    return (x + (x >> 4)) & 0x0F


@triton.jit
def _unary_pass(buf, tile_chunk, tile_b0, chunk_ubyte, chunk_ubytes, chunk_first, chunk_count, tile_off, tile_pop, stops,
                SELECT: tl.constexpr, BLOCK: tl.constexpr):
    t = tl.program_id(0)
    k = tl.load(tile_chunk + t)
    b = tl.load(tile_b0 + t) + tl.arange(0, BLOCK)
    nbytes = tl.load(chunk_ubytes + k)
    valid = b < nbytes
    base = tl.load(chunk_ubyte + k)
    x = tl.load(buf + base + b, mask=valid, other=0).to(tl.int32)
    pc = _popcount8(x)
    if SELECT:
        rank = tl.load(tile_off + t) + tl.cumsum(pc, 0) - pc
        first = tl.load(chunk_first + k)
        count = tl.load(chunk_count + k)
        for i in tl.static_range(8):
            below = _popcount8(x & ((1 << i) - 1))
            code = rank + below
            hit = valid & (((x >> i) & 1) == 1) & (code < count)
            tl.store(stops + first + code, (b * 8 + i).to(tl.int32), mask=hit)
    else:
        tl.store(tile_pop + t, tl.sum(pc, 0))


@triton.jit
def _field(buf, bit, width, valid):
    byte = bit >> 3
    w0 = tl.load(buf + byte, mask=valid, other=0).to(tl.int64)
    w1 = tl.load(buf + byte + 1, mask=valid, other=0).to(tl.int64)
    w2 = tl.load(buf + byte + 2, mask=valid, other=0).to(tl.int64)
    w3 = tl.load(buf + byte + 3, mask=valid, other=0).to(tl.int64)
    word = w0 | (w1 << 8) | (w2 << 16) | (w3 << 24)
    return (word >> (bit & 7)) & ((1 << width) - 1)


@triton.jit
def _bit(buf, bit, valid):
    return (tl.load(buf + (bit >> 3), mask=valid, other=0).to(tl.int64) >> (bit & 7)) & 1


@triton.jit
def _code_pass(buf, tile_chunk, tile_j0, chunk_count, chunk_first, chunk_m, chunk_u, chunk_w, chunk_low, chunk_extra, chunk_sign,
               chunk_start, chunk_length, tile_x, tile_xoff, tile_r, tile_roff, tile_err, stops, values, out,
               PHASE: tl.constexpr, BLOCK: tl.constexpr):
    t = tl.program_id(0)
    k = tl.load(tile_chunk + t)
    j = tl.load(tile_j0 + t) + tl.arange(0, BLOCK)
    count = tl.load(chunk_count + k)
    valid = j < count
    jj = j.to(tl.int64)
    w = tl.load(chunk_w + k)
    u = tl.load(chunk_u + k)
    h = _field(buf, tl.load(chunk_low + k) + jj * w, w, valid)
    has_extra = valid & (h >= u)
    hx = has_extra.to(tl.int64)
    if PHASE == 1:
        tl.store(tile_x + t, tl.sum(hx, 0))
    else:
        ex = tl.load(tile_xoff + t) + tl.cumsum(hx, 0) - hx
        e = _bit(buf, tl.load(chunk_extra + k) + ex, has_extra)
        r = tl.where(has_extra, 2 * h + e - u, h)
        r = tl.where(valid, r, 0)
        if PHASE == 2:
            tl.store(tile_r + t, tl.sum(r, 0))
        else:
            m = tl.load(chunk_m + k)
            s = tl.load(stops + tl.load(chunk_first + k) + j, mask=valid, other=0).to(tl.int64)
            p = m * (s - jj) + tl.load(tile_roff + t) + tl.cumsum(r, 0) + jj
            length = tl.load(chunk_length + k)
            ok = valid & (p < length) & (s >= jj)
            bad = valid & ((p >= length) | (s < jj))
            tl.store(tile_err + t, tl.max(bad.to(tl.int32), 0))
            neg = _bit(buf, tl.load(chunk_sign + k) + jj, valid)
            v_neg = tl.load(values)
            v_pos = tl.load(values + 2)
            v = tl.where(neg == 1, v_neg, v_pos)
            tl.store(out + tl.load(chunk_start + k) + p, v, mask=ok)


def _segmented_exclusive(tile_sums: torch.Tensor, tile_chunk: torch.Tensor, chunk_first_tile: torch.Tensor) -> torch.Tensor:
    """Exclusive prefix sums of tile sums, restarted at the first tile of each chunk."""
    inclusive = torch.cumsum(tile_sums, 0)
    exclusive = inclusive - tile_sums
    return exclusive - exclusive[chunk_first_tile[tile_chunk]]


def _chunk_totals(tile_sums: torch.Tensor, tile_chunk: torch.Tensor, n_chunks: int) -> torch.Tensor:
    totals = torch.zeros(n_chunks, dtype=torch.int64, device=tile_sums.device)
    totals.index_add_(0, tile_chunk, tile_sums.to(torch.int64))
    return totals


class Plan:
    """Per-chunk and per-tile parameters of one decode, uploaded to the device in a single copy."""

    def __init__(self, table, ids: np.ndarray, device: torch.device) -> None:
        staging = []

        def pinned(size: int) -> np.ndarray:
            staging.append(torch.empty(size, dtype=torch.int64, pin_memory=True))  # cached by torch's host allocator
            return staging[-1].numpy()

        cols = PlanColumns(table, ids, CODE_BLOCK, BYTE_BLOCK, alloc=pinned)
        self.n, self.K, self.n_tiles, self.nb_tiles = cols.n, cols.K, cols.n_tiles, cols.nb_tiles
        # asynchronous copy from page-locked memory (the allocator keeps the block until the copy is done)
        dev = staging[0].to(device, non_blocking=True)
        (self.c_cnt, self.c_first, self.c_m, self.c_u, self.c_w, self.c_low, self.c_extra, self.c_sign, self.c_start, self.c_len,
         self.c_ubyte, self.c_ubytes, self.c_xbits, self.c_tile0, self.c_btile0) = dev[: 15 * cols.K].view(15, cols.K).unbind(0)
        (self.t_chunk, self.t_j0, self.b_chunk, self.b_b0, self.unary_last, self.pad_byte, self.pad_used) = dev[15 * cols.K :].split(cols.tail_sizes)


def decode_mode0_triton(table, ids: np.ndarray, buf: torch.Tensor, out: torch.Tensor, values: torch.Tensor, checks, plan: Plan | None = None) -> None:
    """Decode the mode-0 chunks ``ids`` of ``table`` from the padded device buffer into ``out`` (no host sync)."""
    device = buf.device
    p = plan or Plan(table, ids, device)
    n, K = p.n, p.K
    stops = torch.empty(max(n, 1), dtype=torch.int32, device=device)
    if p.nb_tiles:
        grid = (p.nb_tiles,)
        tile_pop = torch.empty(p.nb_tiles, dtype=torch.int64, device=device)  # every tile writes its entry
        _unary_pass[grid](buf, p.b_chunk, p.b_b0, p.c_ubyte, p.c_ubytes, p.c_first, p.c_cnt, tile_pop, tile_pop, stops, SELECT=False, BLOCK=BYTE_BLOCK)
        ones = _chunk_totals(tile_pop, p.b_chunk, K)
        checks.add(ones == p.c_cnt, "golomb chunk unary stream has a code count other than its table's")
        offsets = _segmented_exclusive(tile_pop, p.b_chunk, p.c_btile0)
        _unary_pass[grid](buf, p.b_chunk, p.b_b0, p.c_ubyte, p.c_ubytes, p.c_first, p.c_cnt, offsets, tile_pop, stops, SELECT=True, BLOCK=BYTE_BLOCK)
        checks.add(buf[p.unary_last] != 0, "golomb chunk unary stream has trailing bytes")
    else:
        checks.add(p.c_cnt == 0, "golomb chunk unary stream has a code count other than its table's")
    checks.add((buf[p.pad_byte].to(torch.int64) >> p.pad_used) == 0, "golomb chunk has non-zero padding bits")
    if p.n_tiles == 0:
        checks.add(p.c_xbits == 0, "golomb chunk extra-bit count differs from its table")
        return
    tile_x = torch.empty(p.n_tiles, dtype=torch.int64, device=device)
    tile_r = torch.empty(p.n_tiles, dtype=torch.int64, device=device)
    tile_err = torch.empty(p.n_tiles, dtype=torch.int32, device=device)  # every tile writes its entry
    args = [buf, p.t_chunk, p.t_j0, p.c_cnt, p.c_first, p.c_m, p.c_u, p.c_w, p.c_low, p.c_extra, p.c_sign, p.c_start, p.c_len]
    grid = (p.n_tiles,)
    _code_pass[grid](*args, tile_x, tile_x, tile_r, tile_r, tile_err, stops, values, out, PHASE=1, BLOCK=CODE_BLOCK)
    checks.add(_chunk_totals(tile_x, p.t_chunk, K) == p.c_xbits, "golomb chunk extra-bit count differs from its table")
    tile_xoff = _segmented_exclusive(tile_x, p.t_chunk, p.c_tile0)
    _code_pass[grid](*args, tile_x, tile_xoff, tile_r, tile_r, tile_err, stops, values, out, PHASE=2, BLOCK=CODE_BLOCK)
    tile_roff = _segmented_exclusive(tile_r, p.t_chunk, p.c_tile0)
    _code_pass[grid](*args, tile_x, tile_xoff, tile_r, tile_roff, tile_err, stops, values, out, PHASE=3, BLOCK=CODE_BLOCK)
    checks.add(tile_err == 0, "golomb chunk position is past its length")
