"""The ``golomb`` codec vectorized over chunks with torch ops (the GPU encoder; the decoder where Triton is
missing): the common chunks (mode 0: positions of the non-zeros coded) are coded or decoded together.
Per-chunk parameters (M, plane offsets, first code) are gathered by chunk id, segmented scans become one
global cumsum minus its value at each chunk's first code, and the four planes of every body are written as
bit fields added into one word buffer (fields never overlap, so integer adds are an exact,
order-independent OR). The encoder codes mode-1 chunks (more than half non-zero: their zeros' positions are
coded) in the same pass; the decoder leaves those rare chunks to the numpy per-chunk coder.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from compeft.codecs.golomb.format import (
    DEVICE_ERRORS,
    ERR_COUNT,
    ERR_EXTRA,
    ERR_PADDING,
    ERR_RANGE,
    ERR_TRAILING,
    TABLE_DTYPE,
    ChunkTable,
    bit_length,
    chunk_lengths,
    golomb_parameter,
    header_bytes,
)
from compeft.errors import CodecError


def _to_device(columns: Sequence[np.ndarray], device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
    """Move several equal-length numpy columns to the device in one copy."""
    if not columns[0].size:
        return [torch.zeros(0, dtype=dtype, device=device) for _ in columns]
    stacked = torch.from_numpy(np.ascontiguousarray(np.stack(columns))).to(dtype)
    return list(stacked.to(device).unbind(0))


def _read_bits(buf: torch.Tensor, bit: torch.Tensor) -> torch.Tensor:
    """The single bit at each bit index of the byte buffer."""
    return (buf[bit >> 3].to(bit.dtype) >> (bit & 7)) & 1



class _Checks:
    """Deferred validation: boolean tensors collected during the pass, read back with one sync."""

    def __init__(self) -> None:
        self.items: list[tuple[torch.Tensor, str]] = []

    def add(self, ok: torch.Tensor, message: str) -> None:
        # small flag vectors are kept as they are (one op fewer each); large ones are reduced now
        self.items.append((ok.reshape(-1) if ok.numel() <= 1 << 16 else ok.all().reshape(1), message))

    def raise_first(self) -> None:
        if not self.items:
            return
        flags = torch.cat([ok for ok, _ in self.items]).cpu().numpy()
        start = 0
        for (_, message), end in zip(self.items, itertools.accumulate(ok.numel() for ok, _ in self.items)):
            if not flags[start:end].all():
                raise CodecError(message)
            start = end



def decode_mode0(table: ChunkTable, ids: np.ndarray, buf: torch.Tensor, out: torch.Tensor, values: torch.Tensor) -> None:
    """Decode the mode-0 chunks ``ids`` from the padded buffer ``buf`` into ``out`` (which holds values[1]) on its device."""
    device = out.device
    cnt = table.count[ids]
    n = int(cnt.sum())
    unary = table.unary_bytes[ids]
    n_unary = int(unary.sum())
    unary_base = np.cumsum(unary) - unary  # byte offset of each chunk's unary plane in the gathered stream
    first = np.cumsum(cnt) - cnt
    last = first + cnt - 1
    nonempty = cnt > 0
    small = 8 * (buf.numel() + 8) < 2**31 and out.numel() < 2**31
    it = torch.int32 if small else torch.int64
    big_w = int(table.width[ids].max()) + 7 > 24
    M = table.m[ids]
    u_eff = np.where(M > 1, table.u[ids], 1 << 30)
    qmax = (table.length[ids] - 1) // M
    cols = [
        unary_base * 8,
        8 * unary,
        first,
        8 * table.low_off[ids],
        table.width[ids],
        (np.int64(1) << table.width[ids]) - 1,
        u_eff,
        M,
        qmax,
        8 * table.extra_off[ids],
        8 * table.sign_off[ids],
    ]
    (ubase_k, ubits_k, first_k, lbase_k, w_k, mask_k, u_k, m_k, qmax_k, xbase_k, sbase_k) = _to_device(cols, device, it)
    start_k, length_k, extra_k = _to_device([table.start[ids], table.length[ids], table.extra_bits[ids]], device, torch.int64)
    ne = np.flatnonzero(nonempty)
    first_ne = torch.from_numpy(first[ne]).to(device)
    last_ne = torch.from_numpy(last[ne]).to(device)
    ne_dev = torch.from_numpy(ne).to(device)
    checks = _Checks()

    # unary planes of the selected chunks, gathered into one stream
    uoff = table.unary_off[ids]
    shift = torch.from_numpy(uoff - unary_base).to(device)
    index = torch.arange(n_unary, device=device) + torch.repeat_interleave(shift, torch.from_numpy(unary).to(device), output_size=n_unary)
    ubytes = buf[index]
    ubits = ((ubytes.unsqueeze(1) >> torch.arange(8, device=device, dtype=torch.uint8)) & 1).reshape(-1)
    checks.add(ubits.sum(dtype=torch.int64) == n, f"golomb unary streams do not hold the {n} codes the table says")
    stops = torch.nonzero_static(ubits, size=n, fill_value=0).reshape(-1).to(it)
    if n == 0:
        checks.raise_first()
        return
    cid = torch.repeat_interleave(torch.arange(len(ids), device=device), torch.from_numpy(cnt).to(device), output_size=n)
    s = stops - ubase_k[cid]
    checks.add((s >= 0) & (s < ubits_k[cid]), DEVICE_ERRORS[ERR_COUNT])
    checks.add(s[last_ne] // 8 + 1 == ubits_k[ne_dev] // 8, DEVICE_ERRORS[ERR_TRAILING])
    prev = torch.empty_like(s)
    prev[1:] = s[:-1]
    prev[first_ne] = -1
    q = s - prev - 1
    del prev, stops
    checks.add(q <= qmax_k[cid], DEVICE_ERRORS[ERR_RANGE])
    j = torch.arange(n, device=device, dtype=it) - first_k[cid]

    # low fields: the top b-1 bits of each truncated-binary remainder
    w = w_k[cid]
    lbit = lbase_k[cid] + j * w
    byte = (lbit >> 3).to(torch.int64)
    if big_w:
        b0, b1, b2, b3 = (buf[byte + i].to(torch.int64) for i in range(4))
        word = b0 | (b1 << 8) | (b2 << 16) | (b3 << 24)
        h = ((word >> (lbit & 7).to(torch.int64)) & mask_k[cid].to(torch.int64)).to(it)
    else:
        word = buf[byte].to(it) | (buf[byte + 1].to(it) << 8) | (buf[byte + 2].to(it) << 16)
        h = (word >> (lbit & 7)) & mask_k[cid]
    del word, byte, lbit

    # extra bits: one more bit for the remainders at or above u
    u = u_k[cid]
    has_extra = h >= u
    ex_incl = torch.cumsum(has_extra, 0, dtype=it)
    ex_excl = ex_incl - has_extra.to(it)
    n_extra = torch.zeros(len(ids), dtype=it, device=device)
    n_extra[ne_dev] = ex_incl[last_ne] - ex_excl[first_ne]
    checks.add(n_extra.to(torch.int64) == extra_k, DEVICE_ERRORS[ERR_EXTRA])
    xfirst = torch.zeros(len(ids), dtype=it, device=device)
    xfirst[ne_dev] = ex_excl[first_ne]
    xbit = (xbase_k[cid] + ex_excl - xfirst[cid]).clamp_(0, 8 * buf.numel() - 1)
    e = _read_bits(buf, xbit)
    del xbit, ex_incl, ex_excl
    r = torch.where(has_extra, ((h << 1) | e) - u, h)
    del h, e, has_extra, u

    # positions: segmented cumsum of gap + 1
    g1 = (q * m_k[cid] + r + 1).to(torch.int64)
    del q, r
    g = torch.cumsum(g1, 0)
    gfirst = torch.zeros(len(ids), dtype=torch.int64, device=device)
    gfirst[ne_dev] = g[first_ne] - g1[first_ne]
    pos = g - 1 - gfirst[cid]
    del g, g1
    checks.add(pos[last_ne] < length_k[ne_dev], DEVICE_ERRORS[ERR_RANGE])
    pos += start_k[cid]
    pos.clamp_(0, out.numel() - 1)

    # padding of the low, extra and sign planes
    for base_k, nbits in ((lbase_k, torch.from_numpy(cnt * table.width[ids])), (xbase_k, torch.from_numpy(table.extra_bits[ids])),
                          (sbase_k, torch.from_numpy(cnt))):
        nbits = nbits.to(device=device, dtype=it)
        tail = nbits & 7
        last_byte = ((base_k + nbits) >> 3).to(torch.int64)
        checks.add((tail == 0) | ((buf[last_byte].to(it) >> tail) == 0), DEVICE_ERRORS[ERR_PADDING])

    sign = _read_bits(buf, (sbase_k[cid] + j)).to(torch.bool)
    del j, cid
    out[pos] = torch.where(sign, values[0], values[2])
    checks.raise_first()


def _ranks(counts: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For items grouped by chunk (``counts`` per chunk, in chunk order): each item's chunk id and its index in it."""
    n = int(counts.sum())
    cid = torch.repeat_interleave(torch.arange(len(counts), device=device), torch.from_numpy(counts).to(device), output_size=n)
    first = torch.from_numpy(np.cumsum(counts) - counts).to(device)
    return cid, torch.arange(n, device=device) - first[cid]


def encode(signs: torch.Tensor, segments: Sequence[int] = ()) -> torch.Tensor:
    """The payload of int8 signs on their device, every chunk (mode 0 and mode 1) coded in one vectorized pass;
    the same bytes, returned on the CPU."""
    signs = signs.reshape(-1)
    d = signs.numel()
    entries, data = encode_chunks(signs, np.asarray(chunk_lengths(d, segments), dtype=np.int64))
    head = header_bytes(d, entries)
    payload = torch.empty(len(head) + data.numel(), dtype=torch.uint8, pin_memory=signs.device.type == "cuda")
    payload[: len(head)] = torch.frombuffer(bytearray(head), dtype=torch.uint8)
    payload[len(head) :].copy_(data, non_blocking=True)  # straight into place: a pageable copy runs at a few GB/s
    if signs.device.type == "cuda":
        torch.cuda.current_stream(signs.device).synchronize()
    return payload


def encode_chunks(signs: torch.Tensor, lengths: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
    """The chunks of flat int8 ``signs`` cut at ``lengths``, coded in one vectorized pass on their device: (their
    chunk table rows, their bodies one after another as uint8 on the device)."""
    device = signs.device
    starts = np.cumsum(lengths) - lengths
    K = len(lengths)
    nz = torch.nonzero(signs).reshape(-1)  # the non-zeros, whose signs every chunk's sign plane holds
    before = torch.searchsorted(nz, torch.from_numpy(starts).to(device))
    nnz = np.diff(np.append(before.cpu().numpy().astype(np.int64), nz.numel()))
    mode = (2 * nnz > lengths).astype(np.int64)
    cnt = np.where(mode == 1, lengths - nnz, nnz)  # coded positions: the non-zeros (mode 0) or the zeros (mode 1)
    n = int(cnt.sum())
    if mode.any():  # rare: put the zeros of mode-1 chunks in their chunks' place among the coded positions
        first_coded = torch.from_numpy(np.cumsum(cnt) - cnt).to(device)
        keep = torch.repeat_interleave(torch.from_numpy(mode == 0).to(device), torch.from_numpy(nnz).to(device),
                                       output_size=nz.numel())
        ids0 = np.flatnonzero(mode == 0)
        ids1 = np.flatnonzero(mode == 1)
        pos = torch.empty(n, dtype=torch.int64, device=device)
        cid0, j0 = _ranks(nnz[ids0], device)
        pos[first_coded[torch.from_numpy(ids0).to(device)[cid0]] + j0] = nz[keep]
        cid1, j1 = _ranks(lengths[ids1], device)
        span = torch.from_numpy(starts[ids1]).to(device)[cid1] + j1  # every entry of the mode-1 chunks
        zeros = signs[span] == 0
        zcid = torch.from_numpy(ids1).to(device)[cid1[zeros]]
        _, jz = _ranks(lengths[ids1] - nnz[ids1], device)  # zeros per mode-1 chunk, in chunk order
        pos[first_coded[zcid] + jz] = span[zeros]
        del keep, span, zeros, zcid
    else:
        pos = nz
    M = np.asarray([golomb_parameter(int(c), int(length)) for c, length in zip(cnt.tolist(), lengths.tolist())], dtype=np.int64)
    b = bit_length(M - 1)
    u = (np.int64(1) << b) - M
    w = np.maximum(b - 1, 0)
    first = np.cumsum(cnt) - cnt
    ne = np.flatnonzero(cnt > 0)
    first_ne = torch.from_numpy(first[ne]).to(device)
    last_ne = torch.from_numpy(first[ne] + cnt[ne] - 1).to(device)
    ne_dev = torch.from_numpy(ne).to(device)
    start_k, m_k, u_k, w_k = _to_device([starts, M, np.where(M > 1, u, 1 << 40), w], device, torch.int64)
    cid, j = _ranks(cnt, device)
    local = pos - start_k[cid]
    prev = torch.empty_like(local)
    if n:
        prev[1:] = local[:-1]
        prev[first_ne] = -1
    gap = local - prev - 1
    del prev, local
    m = m_k[cid]
    q = torch.div(gap, m, rounding_mode="floor")
    r = gap - q * m
    del gap, m
    u_c = u_k[cid]
    has_extra = r >= u_c
    high = torch.where(has_extra, (r + u_c) >> 1, r)
    ex = ((r + u_c) & 1) * has_extra
    del r, u_c
    qsum = torch.cumsum(q + 1, 0)
    del q
    xinc = torch.cumsum(has_extra, 0)
    xexc = xinc - has_extra.to(torch.int64)
    # per-chunk totals: unary bits and extra bits (segment sums via the inclusive scans)
    per_chunk = torch.zeros(2, K, dtype=torch.int64, device=device)
    qbefore = torch.zeros(K, dtype=torch.int64, device=device)
    xbefore = torch.zeros(K, dtype=torch.int64, device=device)
    if n:
        qbefore[ne_dev] = torch.where(first_ne > 0, qsum[(first_ne - 1).clamp_(min=0)], torch.zeros_like(first_ne))
        xbefore[ne_dev] = xexc[first_ne]
        per_chunk[0, ne_dev] = qsum[last_ne] - qbefore[ne_dev]
        per_chunk[1, ne_dev] = xinc[last_ne] - xbefore[ne_dev]
    totals = per_chunk.cpu().numpy()
    unary_bytes, extra_bits = (totals[0] + 7) // 8, totals[1]

    entries = np.zeros(K, dtype=TABLE_DTYPE)
    for name, column in (("length", lengths), ("count", cnt), ("m", M), ("mode", mode), ("unary_bytes", unary_bytes),
                         ("extra_bits", extra_bits)):
        entries[name] = column
    low_bytes, extra_bytes, sign_bytes = (cnt * w + 7) // 8, (extra_bits + 7) // 8, (nnz + 7) // 8
    body = unary_bytes + low_bytes + extra_bytes + sign_bytes
    uoff = np.cumsum(body) - body
    loff = uoff + unary_bytes
    xoff = loff + low_bytes
    soff = xoff + extra_bytes
    total = int(body.sum())
    words = torch.zeros(total // 4 + 2, dtype=torch.int64, device=device)
    ubase_k, lbase_k, xbase_k, sbase_k = _to_device([8 * uoff, 8 * loff, 8 * xoff, 8 * soff], device, torch.int64)
    if n:
        _add_fields(words, ubase_k[cid] + (qsum - qbefore[cid]) - 1, None)
        del qsum
        _add_fields(words, lbase_k[cid] + j * w_k[cid], high)
        del high
        _add_fields(words, xbase_k[cid] + xexc - xbefore[cid], ex)
        del xexc, xinc, ex, has_extra
    if nz.numel():
        scid, sj = (cid, j) if pos is nz else _ranks(nnz, device)
        _add_fields(words, sbase_k[scid] + sj, (signs[nz] < 0).to(torch.int64))
    return entries, words.to(torch.int32).view(torch.uint8)[:total]


def _add_fields(words: torch.Tensor, bit: torch.Tensor, value: torch.Tensor | None) -> None:
    """OR value (a field of at most 32 bits, or a single 1 when None) into the 32-bit words at bit offsets."""
    index = bit >> 5
    shift = bit & 31
    if value is None:
        words.index_add_(0, index, torch.bitwise_left_shift(torch.ones_like(bit), shift))
        return
    v = torch.bitwise_left_shift(value, shift)
    words.index_add_(0, index, v & 0xFFFFFFFF)
    words.index_add_(0, index + 1, v >> 32)
