"""The ``golomb`` decoder in Triton (CUDA): seven kernel launches, no torch ops in between.

Closed form used: with s_j the bit index of code j's unary stop inside its chunk, the sum of the
quotients up to j is s_j − j, so the position of code j is p_j = M·(s_j − j) + R_j + j, where R_j is
the inclusive sum of the remainders. Everything else is a tile-local scan plus a per-chunk carry:
  T   per chunk: its id into the chunk column of its tiles (tiles are numbered in chunk order)
  U1  popcount of each tile of unary bytes
  S1  per chunk: scan of its tiles' popcounts → code offset per tile; count, trailing-byte and padding checks
  U2  write s_j for every one bit (select; one lane per bit, so the writes are coalesced)
  C1  per code tile: the codes with an extra bit, and Σ of the remainders without it (h or 2h − u)
  S2  per chunk: scan of its tiles' extra counts → extra-bit offset per tile; each tile's extra bits are
      one run of the extra plane, so their sum is a popcount of it; scan of the remainder sums → remainder
      offset per tile; extra-bit count check
  C2  positions, signs, range checks, the values written in place (the codec fills the zeros, θ_init, on
      a stream of its own beside the earlier passes; C2 waits for it)
Tiles never straddle chunks. The plan (PlanColumns) carries every parameter, zeroed error flags and the
value table in one upload; the kernels set error flags instead of raising, and the host reads them back
once. Low fields are read as two aligned 32-bit words (the buffer is padded to whole words); in-tile
scans are int32 (a tile's remainders sum below 2^30). Chunks can be decoded in groups (``base``
arguments), so that a group decodes while the next one's bytes are still being copied. Mode-1 chunks
and validation of the table are left to the codec (format.read_table; same checks, same errors). Tile sizes and warps:
bench.ab_decode compares variants.

The plan: per-chunk parameters in one int64 host array.

Layout of the array (the kernels index it with the row constants below):
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
import triton
import triton.language as tl

from compeft.codecs.golomb.format import (
    DEVICE_ERRORS,
    ERR_COUNT,
    ERR_EXTRA,
    ERR_PADDING,
    ERR_RANGE,
    ERR_TRAILING,
)
from compeft.errors import CodecError

# chunk rows
CNT, FIRST, M, U, W, LOW, EXTRA, SIGN, START, LEN, UBYTE, UBYTES, XBITS, TILE0, NTILES, BTILE0, NBTILES = range(17)
N_ROWS = 17


def tiles(sizes: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(first tile of each chunk, tiles of each chunk) for chunks of ``sizes`` cut into tiles of ``block``."""
    per = (sizes + block - 1) // block
    return np.cumsum(per) - per, per


class PlanColumns:
    """The plan of decoding the mode-0 chunks ``ids`` of ``table`` (format.ChunkTable) into ``values``'
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


CODE_BLOCK = 1024
BYTE_BLOCK = 512  # the select pass has one lane per bit: 4096
SCAN_BLOCK = 1024
RUN_SCAN_BLOCK = 256
TILE_BLOCK = 256
SELECT_WARPS = 4
CODE_WARPS = 4

_CNT = tl.constexpr(CNT)
_FIRST = tl.constexpr(FIRST)
_M = tl.constexpr(M)
_U = tl.constexpr(U)
_W = tl.constexpr(W)
_LOW = tl.constexpr(LOW)
_EXTRA = tl.constexpr(EXTRA)
_SIGN = tl.constexpr(SIGN)
_START = tl.constexpr(START)
_LEN = tl.constexpr(LEN)
_UBYTE = tl.constexpr(UBYTE)
_UBYTES = tl.constexpr(UBYTES)
_XBITS = tl.constexpr(XBITS)
_TILE0 = tl.constexpr(TILE0)
_NTILES = tl.constexpr(NTILES)
_BTILE0 = tl.constexpr(BTILE0)
_NBTILES = tl.constexpr(NBTILES)
_ERR_COUNT, _ERR_TRAILING, _ERR_PADDING, _ERR_EXTRA, _ERR_RANGE = (
    tl.constexpr(i) for i in (ERR_COUNT, ERR_TRAILING, ERR_PADDING, ERR_EXTRA, ERR_RANGE))


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
def _flag(err, code, bad):
    """Set error flag ``code`` when the scalar ``bad`` is true (plain stores of 1: races are harmless)."""
    tl.store(err + code, bad.to(tl.int64), mask=bad)


@triton.jit
def _mark_tiles(chunk_of, t0, nt, k, BLOCK: tl.constexpr):
    for i in range(0, nt, BLOCK):
        idx = i + tl.arange(0, BLOCK)
        tl.store(chunk_of + t0 + idx, tl.full([BLOCK], 0, tl.int32) + k, mask=idx < nt)


@triton.jit(do_not_specialize=["K"])  # no recompiles as sizes and group offsets vary
def _tile_chunks(plan, K, code_chunk, byte_chunk, BLOCK: tl.constexpr):
    """T, one program per chunk: its id into the chunk column of each of its code tiles and unary-byte tiles."""
    k = tl.program_id(0)
    _mark_tiles(code_chunk, tl.load(plan + _TILE0 * K + k), tl.load(plan + _NTILES * K + k), k, BLOCK)
    _mark_tiles(byte_chunk, tl.load(plan + _BTILE0 * K + k), tl.load(plan + _NBTILES * K + k), k, BLOCK)


@triton.jit(do_not_specialize=["K", "base"])
def _unary_pass(buf, plan, K, byte_chunk, tile_pop, base, BLOCK: tl.constexpr):
    """U1: the one bits of each tile of unary bytes."""
    t = base + tl.program_id(0)
    k = tl.load(byte_chunk + t)
    b = (t - tl.load(plan + _BTILE0 * K + k)) * BLOCK + tl.arange(0, BLOCK)
    valid = b < tl.load(plan + _UBYTES * K + k)
    x = tl.load(buf + tl.load(plan + _UBYTE * K + k) + b, mask=valid, other=0).to(tl.int32)
    tl.store(tile_pop + t, tl.sum(_popcount8(x), 0).to(tl.int64))


@triton.jit
def _padding_bad(buf, end):
    """True when bits at and above bit index ``end`` of its byte are not all zero."""
    used = end & 7
    byte = tl.load(buf + (end >> 3), mask=used != 0, other=0).to(tl.int32)
    return (byte >> used.to(tl.int32)) != 0


@triton.jit(do_not_specialize=["K", "base"])
def _unary_scan(buf, plan, K, tile_pop, tile_off, err, base, BLOCK: tl.constexpr):
    """S1, one program per chunk: code offsets of its unary tiles, and the chunk's byte-level checks."""
    k = base + tl.program_id(0)
    t0 = tl.load(plan + _BTILE0 * K + k)
    nt = tl.load(plan + _NBTILES * K + k)
    carry = tl.full([], 0, tl.int64)
    for i in range(0, nt, BLOCK):
        idx = i + tl.arange(0, BLOCK)
        inside = idx < nt
        x = tl.load(tile_pop + t0 + idx, mask=inside, other=0)
        tl.store(tile_off + t0 + idx, carry + tl.cumsum(x, 0) - x, mask=inside)
        carry += tl.sum(x, 0)
    cnt = tl.load(plan + _CNT * K + k)
    _flag(err, _ERR_COUNT, carry != cnt)
    last = tl.maximum(tl.load(plan + _UBYTE * K + k) + tl.load(plan + _UBYTES * K + k) - 1, 0)
    _flag(err, _ERR_TRAILING, (cnt > 0) & (tl.load(buf + last) == 0))
    w = tl.load(plan + _W * K + k)
    bad = _padding_bad(buf, tl.load(plan + _LOW * K + k) + cnt * w)
    bad = bad | _padding_bad(buf, tl.load(plan + _EXTRA * K + k) + tl.load(plan + _XBITS * K + k))
    bad = bad | _padding_bad(buf, tl.load(plan + _SIGN * K + k) + cnt)
    _flag(err, _ERR_PADDING, bad)


@triton.jit(do_not_specialize=["K", "base"])
def _select_pass(buf, plan, K, byte_chunk, tile_off, stops, base, BLOCK: tl.constexpr):
    """U2: s_j for every one bit. One lane per bit, so the stops of a warp land side by side (coalesced)."""
    t = base + tl.program_id(0)
    k = tl.load(byte_chunk + t)
    lane = tl.arange(0, 8 * BLOCK)
    b = (t - tl.load(plan + _BTILE0 * K + k)) * BLOCK + (lane >> 3)
    valid = b < tl.load(plan + _UBYTES * K + k)
    x = tl.load(buf + tl.load(plan + _UBYTE * K + k) + b, mask=valid, other=0).to(tl.int32)
    one = (x >> (lane & 7)) & 1
    code = tl.load(tile_off + t) + (tl.cumsum(one, 0) - one)
    hit = (one == 1) & (code < tl.load(plan + _CNT * K + k))
    tl.store(stops + tl.load(plan + _FIRST * K + k) + code, (b * 8 + (lane & 7)).to(tl.int32), mask=hit)


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
def _code_head(words, plan, K, code_chunk, t, BLOCK: tl.constexpr):
    """The code tile ``t``: its chunk, code indices, and each code's low field split into the remainder without
    its extra bit (h, or 2h − u when an extra bit follows: r = that + e)."""
    k = tl.load(code_chunk + t)
    j = (t - tl.load(plan + _TILE0 * K + k)) * BLOCK + tl.arange(0, BLOCK)
    valid = j < tl.load(plan + _CNT * K + k)
    jj = j.to(tl.int64)
    w = tl.load(plan + _W * K + k)
    u = tl.load(plan + _U * K + k)
    h = _field(words, tl.load(plan + _LOW * K + k) + jj * w, w, valid)
    has_extra = valid & (h >= u)
    r0 = tl.where(has_extra, 2 * h - u, h).to(tl.int32)
    return k, j, jj, valid, has_extra, r0


@triton.jit
def _code_tail(buf, plan, K, k, t, j, jj, valid, has_extra, r0, tile_xoff, tile_roff, err, stops):
    """The tile's decoded codes: (position p inside the chunk, in range, sign bit); flags out-of-range codes."""
    hx = has_extra.to(tl.int32)
    ex = tl.load(tile_xoff + t) + (tl.cumsum(hx, 0) - hx)
    e = _bit(buf, tl.load(plan + _EXTRA * K + k) + ex, has_extra)
    r = tl.where(has_extra, r0 + e, r0)
    s = tl.load(stops + tl.load(plan + _FIRST * K + k) + j, mask=valid, other=0).to(tl.int64)
    p = tl.load(plan + _M * K + k) * (s - jj) + tl.load(tile_roff + t) + tl.cumsum(r, 0) + jj
    length = tl.load(plan + _LEN * K + k)
    ok = valid & (p < length) & (s >= jj)
    bad = valid & ((p >= length) | (s < jj))
    _flag(err, _ERR_RANGE, tl.max(bad.to(tl.int32), 0) > 0)
    neg = _bit(buf, tl.load(plan + _SIGN * K + k) + jj, valid)
    return p, ok, neg


@triton.jit(do_not_specialize=["K", "base"])
def _code_pass(buf, words, plan, K, code_chunk, tile_x, tile_xoff, tile_h, tile_roff, err, stops, values, out, base,
               FINAL: tl.constexpr, BLOCK: tl.constexpr):
    t = base + tl.program_id(0)
    k, j, jj, valid, has_extra, r0 = _code_head(words, plan, K, code_chunk, t, BLOCK)
    if not FINAL:
        tl.store(tile_x + t, tl.sum(has_extra.to(tl.int32), 0).to(tl.int64))
        tl.store(tile_h + t, tl.sum(r0, 0).to(tl.int64))
    else:
        p, ok, neg = _code_tail(buf, plan, K, k, t, j, jj, valid, has_extra, r0, tile_xoff, tile_roff, err, stops)
        v = tl.where(neg == 1, tl.load(values), tl.load(values + 2))
        tl.store(out + tl.load(plan + _START * K + k) + p, v, mask=ok)


@triton.jit
def _run_popcount(words, a, n, MAX_WORDS: tl.constexpr):
    """Set bits in [a, a + n) of the word buffer, element-wise (n ≤ 32·(MAX_WORDS − 1))."""
    z = a + n
    w0 = a >> 5
    acc = tl.zeros(a.shape, dtype=tl.int64)
    for q in tl.static_range(MAX_WORDS):
        lo = (w0 + q) * 32  # bits [lo, lo + 32) of word w0 + q, clipped to [a, z)
        take = lo < z
        x = tl.load(words + w0 + q, mask=take, other=0).to(tl.int64) & 0xFFFFFFFF
        keep_from = tl.maximum(a - lo, 0)
        keep_to = tl.minimum(z - lo, 32)
        x = x & (((1 << keep_to) - 1) - ((1 << keep_from) - 1))
        acc += tl.where(take & (keep_to > keep_from), _popcount32(x), 0)
    return acc


@triton.jit(do_not_specialize=["K", "base"])
def _code_scan(words, plan, K, tile_x, tile_h, tile_xoff, tile_roff, err, base, BLOCK: tl.constexpr, MAX_WORDS: tl.constexpr):
    """S2, one program per chunk: extra-bit and remainder offsets of its code tiles, and the extra-bit count check."""
    k = base + tl.program_id(0)
    t0 = tl.load(plan + _TILE0 * K + k)
    nt = tl.load(plan + _NTILES * K + k)
    extra = tl.load(plan + _EXTRA * K + k)
    carry_x = tl.full([], 0, tl.int64)
    carry_r = tl.full([], 0, tl.int64)
    for i in range(0, nt, BLOCK):
        idx = i + tl.arange(0, BLOCK)
        inside = idx < nt
        x = tl.load(tile_x + t0 + idx, mask=inside, other=0)
        xoff = carry_x + tl.cumsum(x, 0) - x
        r = tl.load(tile_h + t0 + idx, mask=inside, other=0) + _run_popcount(words, extra + xoff, x, MAX_WORDS)
        tl.store(tile_xoff + t0 + idx, xoff, mask=inside)
        tl.store(tile_roff + t0 + idx, carry_r + tl.cumsum(r, 0) - r, mask=inside)
        carry_x += tl.sum(x, 0)
        carry_r += tl.sum(r, 0)
    _flag(err, _ERR_EXTRA, carry_x != tl.load(plan + _XBITS * K + k))


def plan_columns(table, ids: np.ndarray, device: torch.device, values: torch.Tensor) -> PlanColumns:
    """The decode's plan for ``ids`` decoding into ``values``' dtype, in page-locked memory when ``device``
    is CUDA (for an asynchronous copy: torch's host allocator keeps the block until the copies that read it
    are done)."""
    return PlanColumns(table, ids, CODE_BLOCK, BYTE_BLOCK, values,
                          alloc=lambda n: torch.empty(n, dtype=torch.int64, pin_memory=device.type == "cuda"))


class Plan:
    """A plan on the device (one asynchronous copy), with its error flags and value table as views."""

    def __init__(self, cols: PlanColumns, device: torch.device) -> None:
        self.cols = cols
        dev = self.tensor = cols.tensor.to(device, non_blocking=True, copy=True)  # the device sets its error flags
        self.errors = dev[cols.errors_at : cols.values_at]
        itemsize = torch.empty((), dtype=cols.dtype).element_size()
        self.values = dev[cols.values_at :].view(torch.uint8)[: 3 * itemsize].view(cols.dtype)


def chunk_groups(cols: PlanColumns, ends: list[int], first_pending: int = 0) -> list[tuple[int, int, int]]:
    """(first chunk, end chunk, piece) of each run of planned chunks whose bodies end in the same copied piece
    of the payload (``ends``: the pieces' end offsets); pieces before ``first_pending`` have arrived already,
    so their chunks join its group (fewer launches)."""
    if not cols.K:
        return []
    rows = cols.host[: N_ROWS * cols.K].reshape(N_ROWS, cols.K)
    body_end = (rows[SIGN] + rows[CNT] + 7) >> 3  # a mode-0 body ends with its sign plane
    piece = np.clip(np.searchsorted(np.asarray(ends), body_end, side="left"), first_pending, len(ends) - 1)
    cuts = np.flatnonzero(np.diff(piece)) + 1
    starts = [0, *cuts.tolist()]
    return [(a, b, int(piece[a])) for a, b in zip(starts, [*cuts.tolist(), cols.K])]


def decode_mode0(plan: Plan, buf: torch.Tensor, out: torch.Tensor | None, staged=None, filled=None, last=None) -> None:
    """Decode the planned chunks from the padded device buffer into ``out``, which holds θ_init already or
    will once the CUDA event ``filled`` has passed (no host sync; the error flags are in ``plan.errors``, see
    raise_errors). With ``staged`` (staging.StagedPayload), each group of chunks waits only for the piece
    of the copy its bodies end in. ``last`` replaces the last pass (``out`` unused): it is called with the
    decoded state, ``last(buf, words, plan, K, code_chunk, tile_xoff, tile_roff, err, stops, values, t0, tiles)``
    (triton_apply launches its read-modify-write of the weights there)."""
    cols, device = plan.cols, buf.device
    K, n, n_tiles, nb_tiles = cols.K, cols.n, cols.n_tiles, cols.nb_tiles
    # scratch columns start at multiples of 8 entries: Triton specializes on pointer alignment (no recompiles)
    nb, nt = -(-nb_tiles // 8) * 8, -(-n_tiles // 8) * 8
    scratch = torch.empty(2 * nb + 4 * nt + 8, dtype=torch.int64, device=device)  # every entry is written before it is read
    starts = (0, nb, 2 * nb, 2 * nb + nt, 2 * nb + 2 * nt, 2 * nb + 3 * nt)
    tile_pop, tile_off, tile_x, tile_h, tile_xoff, tile_roff = (scratch[a:] for a in starts)
    stops = torch.empty(max(n, 1), dtype=torch.int32, device=device)
    chunk_of = torch.empty(nt + nb + 8, dtype=torch.int32, device=device)
    code_chunk, byte_chunk = chunk_of, chunk_of[nt:]
    p, err, words = plan.tensor, plan.errors, buf.view(torch.int32)
    _tile_chunks[(K,)](p, K, code_chunk, byte_chunk, BLOCK=TILE_BLOCK)  # needs the plan only: runs while the payload arrives
    groups = chunk_groups(cols, staged.ends, staged.first_pending()) if staged is not None else [(0, K, 0)] * bool(K)
    rows = cols.host[: N_ROWS * K].reshape(N_ROWS, K)
    for k0, k1, piece in groups:
        if staged is not None:
            staged.wait_piece(piece)
        # the group's tiles: chunks' tiles are consecutive, in chunk order
        t0, t1 = int(rows[TILE0, k0]), int(rows[TILE0, k1 - 1] + rows[NTILES, k1 - 1])
        b0, b1 = int(rows[BTILE0, k0]), int(rows[BTILE0, k1 - 1] + rows[NBTILES, k1 - 1])
        if b1 > b0:
            _unary_pass[(b1 - b0,)](buf, p, K, byte_chunk, tile_pop, b0, BLOCK=BYTE_BLOCK)
        _unary_scan[(k1 - k0,)](buf, p, K, tile_pop, tile_off, err, k0, BLOCK=SCAN_BLOCK)
        if b1 > b0:
            _select_pass[(b1 - b0,)](buf, p, K, byte_chunk, tile_off, stops, b0, BLOCK=BYTE_BLOCK, num_warps=SELECT_WARPS)
        args = (buf, words, p, K, code_chunk, tile_x, tile_xoff, tile_h, tile_roff, err, stops, plan.values, out, t0)
        if t1 > t0:
            _code_pass[(t1 - t0,)](*args, FINAL=False, BLOCK=CODE_BLOCK)
        _code_scan[(k1 - k0,)](words, p, K, tile_x, tile_h, tile_xoff, tile_roff, err, k0, BLOCK=RUN_SCAN_BLOCK,
                               MAX_WORDS=CODE_BLOCK // 32 + 1)
        if filled is not None:
            torch.cuda.current_stream(device).wait_event(filled)
            filled = None
        if t1 > t0 and last is not None:
            last(buf, words, p, K, code_chunk, tile_xoff, tile_roff, err, stops, plan.values, t0, t1 - t0)
        elif t1 > t0:
            _code_pass[(t1 - t0,)](*args, FINAL=True, BLOCK=CODE_BLOCK, num_warps=CODE_WARPS)


def raise_errors(flags: np.ndarray) -> None:
    """Raise CodecError with the message of the first error flag set (the order the checks run in)."""
    for flag, message in zip(flags.tolist(), DEVICE_ERRORS):
        if flag:
            raise CodecError(message)
