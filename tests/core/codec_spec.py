"""Independent pure-Python coders written from the normative bitstream descriptions of the codecs.

``golomb`` (id "golomb", magic CPG1) and ``bitmask`` as docs/format.md and the codec modules define
them; slow (bit lists) and meant for short vectors only. Used to pin the library's bytes to the spec.
"""

from __future__ import annotations

import math
import struct

MAX_CHUNK = 1 << 20


def _pack(bits: list[int]) -> bytes:
    """LSB-first bit packing, zero padded to whole bytes."""
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def _unpack(data: bytes, n: int) -> list[int]:
    return [(data[i // 8] >> (i % 8)) & 1 for i in range(n)]


def bitmask_encode(signs: list[int]) -> bytes:
    return _pack([1 if s > 0 else 0 for s in signs]) + _pack([1 if s < 0 else 0 for s in signs])


def golomb_m(count: int, length: int) -> int:
    if count == 0:
        return 1
    p = count / length
    if p >= 0.5:
        return 1
    return max(1, math.ceil(-math.log(2.0 - p) / math.log(1.0 - p)))


def chunks(d: int, segments: list[int]) -> list[int]:
    segs = list(segments) or [d]
    out = []
    for s in segs:
        start = 0
        while start < s:
            out.append(min(MAX_CHUNK, s - start))
            start += MAX_CHUNK
    return out


def golomb_encode(signs: list[int], segments: list[int]) -> bytes:
    d = len(signs)
    table, bodies, start = b"", b"", 0
    lengths = chunks(d, segments)
    for length in lengths:
        part = signs[start : start + length]
        start += length
        nnz = sum(1 for s in part if s)
        mode = 0 if 2 * nnz <= length else 1
        positions = [i for i, s in enumerate(part) if (s != 0) == (mode == 0)]
        count = len(positions)
        m = golomb_m(count, length)
        b = (m - 1).bit_length()
        u = (1 << b) - m
        width = max(0, b - 1)
        unary, low, extra = [], [], []
        prev = -1
        for p in positions:
            g = p - prev - 1
            prev = p
            q, r = divmod(g, m)
            unary += [0] * q + [1]
            if m > 1:
                h = r if r < u else (r + u) >> 1
                low += [(h >> i) & 1 for i in range(width)]
                if h >= u:
                    extra.append((r + u) & 1)
        sign = [1 if s < 0 else 0 for s in part if s]
        planes = [_pack(unary), _pack(low), _pack(extra), _pack(sign)]
        table += struct.pack("<IIIB3xII", length, count, m, mode, len(planes[0]), len(extra))
        bodies += b"".join(planes)
    return struct.pack("<4sQI", b"CPG1", d, len(lengths)) + table + bodies


def golomb_decode(payload: bytes, d: int) -> list[int]:
    """Decode a well-formed CPG1 payload (assertions, not errors, on malformed input)."""
    magic, stored_d, n = struct.unpack_from("<4sQI", payload, 0)
    assert magic == b"CPG1" and stored_d == d
    entries = [struct.unpack_from("<IIIB3xII", payload, 16 + 24 * i) for i in range(n)]
    offset = 16 + 24 * n
    out: list[int] = []
    for length, count, m, mode, unary_bytes, extra_bits in entries:
        b = (m - 1).bit_length()
        u = (1 << b) - m
        width = max(0, b - 1)
        nonzeros = count if mode == 0 else length - count
        sizes = [unary_bytes, (count * width + 7) // 8, (extra_bits + 7) // 8, (nonzeros + 7) // 8]
        planes = []
        for size in sizes:
            planes.append(payload[offset : offset + size])
            offset += size
        unary = _unpack(planes[0], 8 * unary_bytes)
        low = _unpack(planes[1], count * width)
        extra = _unpack(planes[2], extra_bits)
        sign = _unpack(planes[3], nonzeros)
        positions, prev, ui, ei = [], -1, 0, 0
        for j in range(count):
            q = 0
            while unary[ui] == 0:
                q += 1
                ui += 1
            ui += 1
            if m > 1:
                h = sum(low[j * width + i] << i for i in range(width))
                r = h if h < u else ((h << 1) | extra[(ei := ei + 1) - 1]) - u
            else:
                r = 0
            p = prev + 1 + q * m + r
            positions.append(p)
            prev = p
        coded = set(positions)
        chunk = [0] * length
        idx = [i for i in range(length) if (i in coded) == (mode == 0)]
        for k, i in enumerate(idx):
            chunk[i] = -1 if sign[k] else 1
        out += chunk
    assert offset == len(payload)
    return out
