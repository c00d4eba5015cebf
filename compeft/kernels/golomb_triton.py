"""Triton decode of ``golomb`` payloads on CUDA: five passes (one of them tiny) instead of ~40 torch kernels.

Closed form used: with s_j the bit index of code j's unary stop inside its chunk, the sum of the
quotients up to j is s_j − j, so the position of code j is p_j = M·(s_j − j) + R_j + j, where R_j is
the inclusive sum of the remainders. Everything else is a tile-local scan plus a per-chunk carry:
  U1  popcount of each tile of unary bytes           → torch segmented scan → code offset per tile
  U2  write s_j for every one bit (select; one lane per bit, so the writes are coalesced)
  C1  per code tile: the codes with an extra bit, and Σ of the remainders without it (h or 2h − u)
                                                     → torch segmented scan → extra-bit offset per tile
  E   per code tile: popcount of its run of the extra plane (= Σ of its extra bits)
                                                     → torch segmented scan → remainder offset per tile
  C2  positions, signs, range checks, the values written in place (decode_fast fills the zeros, θ_init,
      while the payload is still being copied)
Tiles never straddle chunks, so each scan's carry is a cumsum over tile sums minus the chunk's first.
Low fields are read as two aligned 32-bit words (the buffer is padded to whole words); in-tile scans
are int32 (a tile's remainders sum below 2^30). Mode-1 chunks and validation of the table are left to
golomb_fast (same checks, same errors). Tile sizes and warps: bench.ab_decode compares variants.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from compeft.codecs.golomb_fast import PlanColumns

CODE_BLOCK = 1024
BYTE_BLOCK = 512  # the select pass has one lane per bit: 4096
RUN_BLOCK = 128
SELECT_WARPS = 4
CODE_WARPS = 4


@triton.jit
def _popcount8(x):
    x = x - ((x >> 1) & 0x55)
    x = (x & 0x33) + ((x >> 2) & 0x33)
    return (x + (x >> 4)) & 0x0F


@triton.jit
def _popcount32(x):
    """Set bits of the low 32 bits of an int64."""
    x = x & 0xFFFFFFFF
    x = x - ((x >> 1) & 0x55555555)
    x = (x & 0x33333333) + ((x >> 2) & 0x33333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F
    return ((x * 0x01010101) >> 24) & 0xFF


@triton.jit
def _unary_pass(buf, tile_chunk, tile_b0, chunk_ubyte, chunk_ubytes, tile_pop, BLOCK: tl.constexpr):
    """U1: the one bits of each tile of unary bytes."""
    t = tl.program_id(0)
    k = tl.load(tile_chunk + t)
    b = tl.load(tile_b0 + t) + tl.arange(0, BLOCK)
    valid = b < tl.load(chunk_ubytes + k)
    x = tl.load(buf + tl.load(chunk_ubyte + k) + b, mask=valid, other=0).to(tl.int32)
    tl.store(tile_pop + t, tl.sum(_popcount8(x), 0))


@triton.jit
def _select_pass(buf, tile_chunk, tile_b0, chunk_ubyte, chunk_ubytes, chunk_first, chunk_count, tile_off, stops, BLOCK: tl.constexpr):
    """U2: s_j for every one bit. One lane per bit, so the stops of a warp land side by side (coalesced)."""
    t = tl.program_id(0)
    k = tl.load(tile_chunk + t)
    lane = tl.arange(0, 8 * BLOCK)
    b = tl.load(tile_b0 + t) + (lane >> 3)
    valid = b < tl.load(chunk_ubytes + k)
    x = tl.load(buf + tl.load(chunk_ubyte + k) + b, mask=valid, other=0).to(tl.int32)
    one = (x >> (lane & 7)) & 1
    code = tl.load(tile_off + t) + (tl.cumsum(one, 0) - one)
    hit = (one == 1) & (code < tl.load(chunk_count + k))
    tl.store(stops + tl.load(chunk_first + k) + code, (b * 8 + (lane & 7)).to(tl.int32), mask=hit)


@triton.jit
def _field(words, bit, width, valid):
    """The ``width``-bit field (width ≤ 32) at bit index ``bit``, from two aligned little-endian 32-bit words."""
    w = bit >> 5
    lo = tl.load(words + w, mask=valid, other=0).to(tl.int64) & 0xFFFFFFFF
    hi = tl.load(words + w + 1, mask=valid, other=0).to(tl.int64)
    return (((hi << 32) | lo) >> (bit & 31)) & ((1 << width) - 1)


@triton.jit
def _bit(buf, bit, valid):
    return (tl.load(buf + (bit >> 3), mask=valid, other=0).to(tl.int32) >> (bit & 7).to(tl.int32)) & 1


@triton.jit
def _code_pass(buf, words, tile_chunk, tile_j0, chunk_count, chunk_first, chunk_m, chunk_u, chunk_w, chunk_low, chunk_extra, chunk_sign,
               chunk_start, chunk_length, tile_x, tile_xoff, tile_h, tile_roff, tile_err, stops, values, out,
               FINAL: tl.constexpr, BLOCK: tl.constexpr):
    t = tl.program_id(0)
    k = tl.load(tile_chunk + t)
    j0 = tl.load(tile_j0 + t)
    j = j0 + tl.arange(0, BLOCK)
    count = tl.load(chunk_count + k)
    valid = j < count
    jj = j.to(tl.int64)
    w = tl.load(chunk_w + k)
    u = tl.load(chunk_u + k)
    h = _field(words, tl.load(chunk_low + k) + jj * w, w, valid)
    has_extra = valid & (h >= u)
    hx = has_extra.to(tl.int32)
    # the remainder without its extra bit: h, or 2h - u when an extra bit follows (r = that + e)
    r0 = tl.where(has_extra, 2 * h - u, h).to(tl.int32)
    if not FINAL:
        tl.store(tile_x + t, tl.sum(hx, 0))
        tl.store(tile_h + t, tl.sum(r0, 0))
    else:
        ex = tl.load(tile_xoff + t) + (tl.cumsum(hx, 0) - hx)
        e = _bit(buf, tl.load(chunk_extra + k) + ex, has_extra)
        r = tl.where(has_extra, r0 + e, r0)
        m = tl.load(chunk_m + k)
        first = tl.load(chunk_first + k)
        roff = tl.load(tile_roff + t)
        s = tl.load(stops + first + j, mask=valid, other=0).to(tl.int64)
        p = m * (s - jj) + roff + tl.cumsum(r, 0) + jj
        length = tl.load(chunk_length + k)
        ok = valid & (p < length) & (s >= jj)
        bad = valid & ((p >= length) | (s < jj))
        tl.store(tile_err + t, tl.max(bad.to(tl.int32), 0))
        start = tl.load(chunk_start + k)
        neg = _bit(buf, tl.load(chunk_sign + k) + jj, valid)
        v_neg = tl.load(values)
        v_pos = tl.load(values + 2)
        v = tl.where(neg == 1, v_neg, v_pos)
        tl.store(out + start + p, v, mask=ok)


@triton.jit
def _range_popcount(words, first_bit, nbits, n, total, MAX_WORDS: tl.constexpr, BLOCK: tl.constexpr):
    """total[i] = set bits in [first_bit[i], first_bit[i] + nbits[i]) of the word buffer (nbits ≤ 32·(MAX_WORDS − 1))."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = i < n
    a = tl.load(first_bit + i, mask=valid, other=0)
    z = a + tl.load(nbits + i, mask=valid, other=0)
    w0 = a >> 5
    acc = tl.zeros([BLOCK], dtype=tl.int64)
    for q in tl.static_range(MAX_WORDS):
        lo = (w0 + q) * 32  # bits [lo, lo + 32) of word w0 + q, clipped to [a, z)
        take = valid & (lo < z)
        x = tl.load(words + w0 + q, mask=take, other=0).to(tl.int64) & 0xFFFFFFFF
        keep_from = tl.maximum(a - lo, 0)
        keep_to = tl.minimum(z - lo, 32)
        x = x & (((1 << keep_to) - 1) - ((1 << keep_from) - 1))
        acc += tl.where(take & (keep_to > keep_from), _popcount32(x), 0)
    tl.store(total + i, acc, mask=valid)


def _segmented_exclusive(tile_sums: torch.Tensor, tile_chunk: torch.Tensor, chunk_first_tile: torch.Tensor) -> torch.Tensor:
    """Exclusive prefix sums of tile sums, restarted at the first tile of each chunk."""
    inclusive = torch.cumsum(tile_sums, 0)
    exclusive = inclusive - tile_sums
    return exclusive - exclusive[chunk_first_tile[tile_chunk]]


def _chunk_totals(tile_sums: torch.Tensor, tile_chunk: torch.Tensor, n_chunks: int) -> torch.Tensor:
    totals = torch.zeros(n_chunks, dtype=torch.int64, device=tile_sums.device)
    totals.index_add_(0, tile_chunk, tile_sums.to(torch.int64))
    return totals


def plan_columns(table, ids: np.ndarray, device: torch.device) -> PlanColumns:
    """The decode's plan columns for ``ids``, in page-locked memory when ``device`` is CUDA (for an asynchronous
    copy: torch's host allocator keeps the block until the copies that read it are done)."""
    return PlanColumns(table, ids, CODE_BLOCK, BYTE_BLOCK, alloc=lambda n: torch.empty(n, dtype=torch.int64, pin_memory=device.type == "cuda"))


class Plan:
    """Per-chunk and per-tile parameters of one decode, uploaded to the device in a single copy."""

    def __init__(self, table, ids: np.ndarray, device: torch.device, columns: PlanColumns | None = None) -> None:
        cols = columns if columns is not None else plan_columns(table, ids, device)
        self.n, self.K, self.n_tiles, self.nb_tiles = cols.n, cols.K, cols.n_tiles, cols.nb_tiles
        dev = cols.tensor.to(device, non_blocking=True)
        (self.c_cnt, self.c_first, self.c_m, self.c_u, self.c_w, self.c_low, self.c_extra, self.c_sign, self.c_start, self.c_len,
         self.c_ubyte, self.c_ubytes, self.c_xbits, self.c_tile0, self.c_btile0) = dev[: 15 * cols.K].view(15, cols.K).unbind(0)
        (self.t_chunk, self.t_j0, self.b_chunk, self.b_b0, self.unary_last, self.pad_byte, self.pad_used) = dev[15 * cols.K :].split(cols.tail_sizes)


def decode_mode0_triton(table, ids: np.ndarray, buf: torch.Tensor, out: torch.Tensor, values: torch.Tensor, checks, plan: Plan | None = None) -> None:
    """Decode the mode-0 chunks ``ids`` of ``table`` from the padded device buffer into ``out``, which holds
    θ_init already (no host sync)."""
    device = buf.device
    p = plan or Plan(table, ids, device)
    n, K = p.n, p.K
    stops = torch.empty(max(n, 1), dtype=torch.int32, device=device)
    if p.nb_tiles:
        grid = (p.nb_tiles,)
        tile_pop = torch.empty(p.nb_tiles, dtype=torch.int64, device=device)  # every tile writes its entry
        _unary_pass[grid](buf, p.b_chunk, p.b_b0, p.c_ubyte, p.c_ubytes, tile_pop, BLOCK=BYTE_BLOCK)
        ones = _chunk_totals(tile_pop, p.b_chunk, K)
        checks.add(ones == p.c_cnt, "golomb chunk unary stream has a code count other than its table's")
        offsets = _segmented_exclusive(tile_pop, p.b_chunk, p.c_btile0)
        _select_pass[grid](buf, p.b_chunk, p.b_b0, p.c_ubyte, p.c_ubytes, p.c_first, p.c_cnt, offsets, stops, BLOCK=BYTE_BLOCK,
                           num_warps=SELECT_WARPS)
        checks.add(buf[p.unary_last] != 0, "golomb chunk unary stream has trailing bytes")
    else:
        checks.add(p.c_cnt == 0, "golomb chunk unary stream has a code count other than its table's")
    checks.add((buf[p.pad_byte].to(torch.int64) >> p.pad_used) == 0, "golomb chunk has non-zero padding bits")
    if p.n_tiles == 0:
        checks.add(p.c_xbits == 0, "golomb chunk extra-bit count differs from its table")
        return
    tile_x = torch.empty(p.n_tiles, dtype=torch.int64, device=device)
    tile_h = torch.empty(p.n_tiles, dtype=torch.int64, device=device)
    tile_err = torch.empty(p.n_tiles, dtype=torch.int32, device=device)  # every tile writes its entry
    words = buf.view(torch.int32)
    args = [buf, words, p.t_chunk, p.t_j0, p.c_cnt, p.c_first, p.c_m, p.c_u, p.c_w, p.c_low, p.c_extra, p.c_sign, p.c_start, p.c_len]
    grid = (p.n_tiles,)
    _code_pass[grid](*args, tile_x, tile_x, tile_h, tile_h, tile_err, stops, values, out, FINAL=False, BLOCK=CODE_BLOCK)
    checks.add(_chunk_totals(tile_x, p.t_chunk, K) == p.c_xbits, "golomb chunk extra-bit count differs from its table")
    tile_xoff = _segmented_exclusive(tile_x, p.t_chunk, p.c_tile0)
    # each tile's extra bits are one run of its chunk's extra plane: their sum is a popcount of that run
    tile_e = torch.empty(p.n_tiles, dtype=torch.int64, device=device)
    _range_popcount[(triton.cdiv(p.n_tiles, RUN_BLOCK),)](words, p.c_extra[p.t_chunk] + tile_xoff, tile_x, p.n_tiles, tile_e,
                                                           MAX_WORDS=CODE_BLOCK // 32 + 1, BLOCK=RUN_BLOCK)
    tile_roff = _segmented_exclusive(tile_h + tile_e, p.t_chunk, p.c_tile0)
    _code_pass[grid](*args, tile_x, tile_xoff, tile_h, tile_roff, tile_err, stops, values, out, FINAL=True, BLOCK=CODE_BLOCK, num_warps=CODE_WARPS)
    checks.add(tile_err == 0, "golomb chunk position is past its length")
