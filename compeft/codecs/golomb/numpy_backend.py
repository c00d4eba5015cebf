"""The ``golomb`` codec on the CPU: the per-chunk algorithm in numpy, chunk groups in threads.

On the CPU, numpy's packbits/unpackbits (bitorder="little"), flatnonzero and cumsum over one chunk
(≤ 2^20 entries, cache-sized) cost far less than torch's fresh large tensors; chunk groups run in
parallel threads (numpy releases the GIL inside its loops). The device backends use the per-chunk
functions for the rare mode-1 chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from compeft.codecs.golomb.format import (
    TABLE_COLUMNS,
    TABLE_DTYPE,
    ChunkTable,
    chunk_lengths,
    golomb_parameter,
    header_bytes,
)
from compeft.dtypes import INT_OF_SIZE
from compeft.errors import CodecError


def pack_fields_np(values: np.ndarray, width: int) -> np.ndarray:
    """bits.pack_fields in numpy: each value's low ``width`` bits (≤ 32), LSB first, packed. Widths dividing 8 pack
    8/width fields per byte with shifts; others go through a (fields × width) bit matrix and packbits."""
    n = values.size
    if not n or not width:
        return np.zeros(0, np.uint8)
    if 8 % width == 0:
        per = 8 // width
        v = np.zeros(-(-n // per) * per, np.uint8)
        np.bitwise_and(values, (1 << width) - 1, out=v[:n], casting="unsafe")
        rows = v.reshape(-1, per)
        out = rows[:, 0].copy()
        for i in range(1, per):
            out |= rows[:, i] << np.uint8(i * width)
        return out
    u32 = np.uint32
    bits = ((values.astype(u32, copy=False)[:, None] >> np.arange(width, dtype=u32)) & u32(1)).astype(np.uint8)
    return np.packbits(bits.reshape(-1), bitorder="little")


def unpack_fields_np(data: np.ndarray, count: int, width: int) -> np.ndarray:
    """bits.unpack_fields in numpy: count fields of ``width`` bits (≤ 32) as int64."""
    if width <= 25:  # a field plus its bit offset fits the 32-bit little-endian word starting at its byte
        padded = np.zeros(data.size + 4, dtype=np.uint8)
        padded[: data.size] = data
        words = np.ndarray((data.size + 1,), dtype="<u4", buffer=padded, strides=(1,))  # one word per byte
        at = np.arange(count, dtype=np.int64) * width
        fields = (words[at >> 3] >> (at & 7).astype(np.uint32)) & np.uint32((1 << width) - 1)
        return fields.astype(np.int64)
    bits = np.unpackbits(data, count=count * width, bitorder="little").reshape(count, width)
    packed = np.packbits(bits, axis=1, bitorder="little")
    wide = np.zeros((count, 4), dtype=np.uint8)
    wide[:, : packed.shape[1]] = packed
    return wide.view("<u4").reshape(-1).astype(np.int64)


def _pack(bits: np.ndarray) -> np.ndarray:
    return np.packbits(bits, bitorder="little") if bits.size else np.zeros(0, np.uint8)


def encode_chunk_np(s: np.ndarray) -> tuple[tuple[int, int, int, int, int, int], list[np.ndarray]]:
    """golomb.encode_chunk for one int8 numpy chunk: (table entry fields, four planes)."""
    positions = np.flatnonzero(s != 0)  # flatnonzero is ~5x faster on bool than on int8
    return encode_positions(s.size, positions, s[positions] < 0)


def encode_positions(length: int, positions: np.ndarray,
                     negative: np.ndarray) -> tuple[tuple[int, int, int, int, int, int], list[np.ndarray]]:
    """One chunk from its non-zero entries (``positions`` increasing, ``negative`` their sign bits): (table entry
    fields, four planes), as encode_chunk_np of the int8 chunk they describe. Gaps, quotients and remainders are
    uint32 (a chunk has at most 2^20 entries): numpy divides them by the scalar M without a hardware division."""
    nnz = positions.size
    mode = 0 if 2 * nnz <= length else 1
    if mode == 0:
        coded = positions
    else:
        zero = np.ones(length, dtype=bool)
        zero[positions] = False
        coded = np.flatnonzero(zero)
    count = coded.size
    m = golomb_parameter(count, length)
    u32 = np.uint32
    gaps = np.diff(coded.astype(np.int32, copy=False), prepend=np.int32(-1)).view(u32)
    gaps -= u32(1)
    if m == 1:
        q, low, extra, extra_bits = gaps, np.zeros(0, np.uint8), np.zeros(0, np.uint8), 0
    else:
        q = gaps // u32(m)
        r = gaps - q * u32(m)
        b = (m - 1).bit_length()
        u = (1 << b) - m
        has_extra = r >= u32(u)
        e = has_extra.view(np.uint8)
        high = (r + e * u32(u)) >> e  # (r + u) >> 1 where the code has an extra bit, else r
        width = b - 1
        low = pack_fields_np(high, width) if width and count else np.zeros(0, np.uint8)
        extra_values = np.compress(has_extra, ((r + u32(u)) & u32(1)).astype(np.uint8))
        extra_bits = int(extra_values.size)
        extra = _pack(extra_values)
    if count:
        ends = np.cumsum(q, dtype=np.int64)
        ends += np.arange(count)  # each code is q zero bits and a one bit
        unary_bits = np.zeros(int(ends[-1]) + 1, dtype=np.uint8)
        unary_bits[ends] = 1
        unary = _pack(unary_bits)
    else:
        unary = np.zeros(0, np.uint8)
    sign = _pack(np.asarray(negative, dtype=bool))
    return (length, count, m, mode, unary.size, extra_bits), [unary, low, extra, sign]


def encode(signs: torch.Tensor, segments: Sequence[int] = (), threads: int | None = None) -> torch.Tensor:
    """The payload of int8 signs on the CPU: numpy per chunk, chunk groups in threads."""
    s = signs.reshape(-1).to(torch.int8).cpu().numpy()
    d = s.size
    lengths = chunk_lengths(d, segments)
    starts = np.cumsum(lengths) - np.asarray(lengths, dtype=np.int64) if lengths else np.zeros(0, np.int64)
    results: list = [None] * len(lengths)

    def run(ids: range) -> None:
        for i in ids:
            a = int(starts[i])
            results[i] = encode_chunk_np(s[a : a + lengths[i]])

    _run_groups(run, len(lengths), threads)
    table = np.zeros(len(lengths), dtype=TABLE_DTYPE)
    for name, col in zip(TABLE_COLUMNS, zip(*(r[0] for r in results)) if results else (), strict=False):
        table[name] = col
    head = np.frombuffer(header_bytes(d, table), dtype=np.uint8)
    planes = [head, *(p for r in results for p in r[1])]
    return torch.from_numpy(np.concatenate(planes))


def _run_groups(fn, n: int, threads: int | None) -> None:
    """fn(range) over about equal contiguous ranges of n items, one per thread."""
    threads = max(1, min(threads or torch.get_num_threads(), n))
    if threads == 1:
        fn(range(n))
        return
    cuts = [n * i // threads for i in range(threads + 1)]
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(fn, range(a, b)) for a, b in zip(cuts[:-1], cuts[1:])]:
            f.result()


def _padding_ok(plane: np.ndarray, n_bits: int) -> bool:
    return n_bits % 8 == 0 or int(plane[n_bits // 8]) >> (n_bits % 8) == 0


def decode_chunk_np(t: ChunkTable, i: int, buf: np.ndarray, seg: np.ndarray, values: np.ndarray) -> None:
    """Decode chunk i into ``seg`` (its ``length`` entries, holding values[1] already) as values[t + 1]."""
    length, count, m, mode = int(t.length[i]), int(t.count[i]), int(t.m[i]), int(t.mode[i])
    ub, xbits, nonzeros = int(t.unary_bytes[i]), int(t.extra_bits[i]), int(t.nonzeros[i])
    uo, lo, xo, so = int(t.unary_off[i]), int(t.low_off[i]), int(t.extra_off[i]), int(t.sign_off[i])
    low, extra, sign = buf[lo:xo], buf[xo:so], buf[so : so + int(t.sign_bytes[i])]
    stops = np.flatnonzero(np.unpackbits(buf[uo:lo], bitorder="little").view(bool))
    if stops.size != count:
        raise CodecError(f"chunk unary stream has {stops.size} codes, table says {count}")
    if count and int(stops[-1]) // 8 + 1 != ub:
        raise CodecError("chunk unary stream has trailing bytes")
    q = np.diff(stops, prepend=-1) - 1
    if m == 1:
        if xbits:
            raise CodecError("chunk with M=1 has extra bits")
        gaps1 = q + 1
    else:
        b = (m - 1).bit_length()
        u = (1 << b) - m
        width = b - 1
        if width and count:
            high = unpack_fields_np(low, count, width)
        else:
            high = np.zeros(count, dtype=np.int64)
        has_extra = high >= u
        n_extra = int(np.count_nonzero(has_extra))
        if n_extra != xbits:
            raise CodecError(f"chunk has {n_extra} extra-bit codes, table says {xbits}")
        r = high
        if n_extra:
            ev = np.unpackbits(extra, count=n_extra, bitorder="little").astype(np.int64)
            r[has_extra] = ((high[has_extra] << 1) | ev) - u
        if not (_padding_ok(low, count * width) and _padding_ok(extra, n_extra)):
            raise CodecError("chunk has non-zero padding bits")
        gaps1 = q * m + r + 1
    positions = np.cumsum(gaps1) - 1
    if count and int(positions[-1]) >= length:
        raise CodecError(f"chunk position {int(positions[-1])} is past its length {length}")
    if not _padding_ok(sign, nonzeros):
        raise CodecError("chunk sign plane has non-zero padding bits")
    negative = np.unpackbits(sign, count=nonzeros, bitorder="little") if nonzeros else np.zeros(0, np.uint8)
    chosen = values[[2, 0]].take(negative)  # a two-entry lookup is ~5x faster than np.where with scalars
    if mode == 0:
        seg[positions] = chosen
    else:
        keep = np.ones(length, dtype=bool)
        keep[positions] = False
        seg[keep] = chosen


def decode_into(table: ChunkTable, payload: torch.Tensor, out: torch.Tensor, values: torch.Tensor,
                threads: int | None = None) -> None:
    """Write τ mapped through ``values`` = (v₋₁, v₀, v₊₁) into the CPU tensor ``out``, chunk groups in threads."""
    buf = payload.reshape(-1).cpu().contiguous().numpy()
    values = values.cpu()
    out.fill_(values[1])
    ints = INT_OF_SIZE[values.element_size()]
    out_np = out.view(torch.uint8).numpy().view(ints)
    vals = values.contiguous().view(torch.uint8).numpy().view(ints)
    starts, lengths = table.start, table.length

    def run(ids: range) -> None:
        for i in ids:
            a = int(starts[i])
            decode_chunk_np(table, i, buf, out_np[a : a + int(lengths[i])], vals)

    _run_groups(run, len(table), threads)


def decode_chunk_host(table: ChunkTable, i: int, payload: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """One chunk decoded on the host into ``values``' dtype (the device backends' path for mode-1 chunks)."""
    values = values.cpu()
    seg = torch.empty(int(table.length[i]), dtype=values.dtype)
    seg.fill_(values[1])
    ints = INT_OF_SIZE[values.element_size()]
    decode_chunk_np(table, i, payload.reshape(-1).cpu().contiguous().numpy(), seg.view(torch.uint8).numpy().view(ints),
                    values.contiguous().view(torch.uint8).numpy().view(ints))
    return seg
