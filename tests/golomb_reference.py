"""The reference ``golomb`` coder: one chunk at a time in torch ops, straight from the bitstream description
(compeft/codecs/golomb/format.py). The fast backends are checked against it; the library never uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from compeft.codecs.bits import pack_bits, padding_is_zero, unpack_bits
from compeft.codecs.golomb.format import (
    ENTRY,
    HEADER,
    MAGIC,
    MAX_CHUNK,
    chunk_lengths,
    golomb_parameter,
    read_header,
)
from compeft.errors import CodecError


def pack_fields(values: torch.Tensor, width: int) -> torch.Tensor:
    """Pack non-negative integers as fixed-width fields (each LSB first) into bytes."""
    if width == 0 or values.numel() == 0:
        return torch.empty(0, dtype=torch.uint8, device=values.device)
    shifts = torch.arange(width, device=values.device, dtype=torch.int64)
    bits = (values.to(torch.int64).unsqueeze(1) >> shifts) & 1
    return pack_bits(bits.reshape(-1))


def unpack_fields(data: torch.Tensor, count: int, width: int) -> torch.Tensor:
    """Inverse of pack_fields: count fixed-width fields as int64."""
    if width == 0 or count == 0:
        return torch.zeros(count, dtype=torch.int64, device=data.device)
    bits = unpack_bits(data, count * width).view(count, width).to(torch.int64)
    shifts = torch.arange(width, device=data.device, dtype=torch.int64)
    return (bits << shifts).sum(1)



@dataclass(frozen=True)
class ChunkEntry:
    """One row of the chunk table, with the byte sizes of its body's planes derived from it."""

    length: int
    count: int
    m: int
    mode: int
    unary_bytes: int
    extra_bits: int

    @property
    def width(self) -> int:
        """Bits per ``low`` field: ⌈log2 M⌉ − 1 (0 for M ≤ 2)."""
        return max(0, (self.m - 1).bit_length() - 1)

    @property
    def nonzeros(self) -> int:
        return self.count if self.mode == 0 else self.length - self.count

    @property
    def plane_bytes(self) -> tuple[int, int, int, int]:
        return (
            self.unary_bytes,
            (self.count * self.width + 7) // 8,
            (self.extra_bits + 7) // 8,
            (self.nonzeros + 7) // 8,
        )


def encode_chunk(signs: torch.Tensor) -> tuple[ChunkEntry, list[torch.Tensor]]:
    """Code one chunk of the ternary vector; returns its table entry and its four planes."""
    length = signs.numel()
    nonzero = signs != 0
    nnz = int(nonzero.sum().item())
    mode = 0 if 2 * nnz <= length else 1
    positions = torch.nonzero(nonzero if mode == 0 else ~nonzero).reshape(-1)
    count = positions.numel()
    m = golomb_parameter(count, length)
    previous = torch.cat([positions.new_full((1,), -1), positions[:-1]])
    gaps = positions - previous - 1
    q, r = gaps // m, gaps % m
    ends = torch.cumsum(q + 1, 0) - 1
    unary_bits = torch.zeros(int(ends[-1].item()) + 1 if count else 0, dtype=torch.uint8, device=signs.device)
    unary_bits[ends] = 1
    b = (m - 1).bit_length()
    u = (1 << b) - m
    if m == 1:
        low = extra = torch.empty(0, dtype=torch.uint8, device=signs.device)
        extra_bits = 0
    else:
        has_extra = r >= u
        high = torch.where(has_extra, (r + u) >> 1, r)
        low = pack_fields(high, b - 1)
        extra_values = ((r + u) & 1)[has_extra]
        extra_bits = extra_values.numel()
        extra = pack_bits(extra_values)
    sign_bits = signs[nonzero] < 0
    planes = [pack_bits(unary_bits), low, extra, pack_bits(sign_bits)]
    return ChunkEntry(length, count, m, mode, planes[0].numel(), extra_bits), planes


def decode_chunk(entry: ChunkEntry, body: torch.Tensor) -> torch.Tensor:
    """Inverse of encode_chunk for one chunk body (on body's device)."""
    device = body.device
    sizes = entry.plane_bytes
    ends = [sum(sizes[: i + 1]) for i in range(4)]
    unary, low, extra, sign = (body[a:b] for a, b in zip([0, *ends[:3]], ends))
    count, m = entry.count, entry.m
    unary_bits = unpack_bits(unary, 8 * entry.unary_bytes)
    stops = torch.nonzero(unary_bits).reshape(-1)
    if stops.numel() != count:
        raise CodecError(f"chunk unary stream has {stops.numel()} codes, table says {count}")
    if count and (int(stops[-1].item()) // 8 + 1) != entry.unary_bytes:
        raise CodecError("chunk unary stream has trailing bytes")
    q = stops - torch.cat([stops.new_full((1,), -1), stops[:-1]]) - 1
    if m == 1:
        if entry.extra_bits:
            raise CodecError("chunk with M=1 has extra bits")
        r = torch.zeros_like(q)
    else:
        b = (m - 1).bit_length()
        u = (1 << b) - m
        high = unpack_fields(low, count, b - 1)
        has_extra = high >= u
        n_extra = int(has_extra.sum().item())
        if n_extra != entry.extra_bits:
            raise CodecError(f"chunk has {n_extra} extra-bit codes, table says {entry.extra_bits}")
        extra_values = unpack_bits(extra, n_extra).to(torch.int64)
        r = high.clone()
        r[has_extra] = ((high[has_extra] << 1) | extra_values) - u
        if not (padding_is_zero(low, count * (b - 1)) and padding_is_zero(extra, n_extra)):
            raise CodecError("chunk has non-zero padding bits")
    positions = torch.cumsum(q * m + r + 1, 0) - 1
    if count and int(positions[-1].item()) >= entry.length:
        raise CodecError(f"chunk position {int(positions[-1].item())} is past its length {entry.length}")
    if not padding_is_zero(sign, entry.nonzeros):
        raise CodecError("chunk sign plane has non-zero padding bits")
    values = 1 - 2 * unpack_bits(sign, entry.nonzeros).to(torch.int8)
    out = torch.zeros(entry.length, dtype=torch.int8, device=device)
    if entry.mode == 0:
        out[positions] = values
    else:
        keep = torch.ones(entry.length, dtype=torch.bool, device=device)
        keep[positions] = False
        out[keep] = values
    return out


def read_table(payload: torch.Tensor, d: int) -> list[ChunkEntry]:
    """Parse and check the header and chunk table against the payload size and d."""
    size = payload.numel()
    n_chunks = read_header(payload, d)
    raw = payload[HEADER.size : HEADER.size + n_chunks * ENTRY.size].cpu().numpy().tobytes()
    entries, total_len, total_bytes = [], 0, HEADER.size + n_chunks * ENTRY.size
    for i in range(n_chunks):
        entry = ChunkEntry(*ENTRY.unpack_from(raw, i * ENTRY.size))
        if not (1 <= entry.length <= MAX_CHUNK and entry.count <= entry.length and entry.mode in (0, 1)):
            raise CodecError(f"golomb chunk {i}: bad length/count/mode {entry.length}/{entry.count}/{entry.mode}")
        if not (1 <= entry.m <= entry.length) or entry.extra_bits > entry.count:
            raise CodecError(f"golomb chunk {i}: bad parameter M={entry.m} or extra_bits={entry.extra_bits}")
        entries.append(entry)
        total_len += entry.length
        total_bytes += sum(entry.plane_bytes)
    if total_len != d:
        raise CodecError(f"golomb chunks cover {total_len} entries, expected {d}")
    if total_bytes != size:
        raise CodecError(f"golomb payload is {size} bytes, its table describes {total_bytes}")
    return entries



def encode_reference(signs: torch.Tensor, segments: Sequence[int] = ()) -> torch.Tensor:
    """The reference coder: one chunk at a time, straight from the bitstream description."""
    signs = signs.reshape(-1)
    d = signs.numel()
    entries, bodies, start = [], [], 0
    for length in chunk_lengths(d, segments):
        entry, planes = encode_chunk(signs[start : start + length])
        entries.append(entry)
        bodies.extend(p.cpu() for p in planes)
        start += length
    table = b"".join(ENTRY.pack(e.length, e.count, e.m, e.mode, e.unary_bytes, e.extra_bits) for e in entries)
    head = torch.frombuffer(bytearray(HEADER.pack(MAGIC, d, len(entries)) + table), dtype=torch.uint8)
    return torch.cat([head, *bodies])

def decode_reference(payload: torch.Tensor, d: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The reference decoder: one chunk at a time."""
    entries = read_table(payload, d)
    data = payload.to(device)
    offset = HEADER.size + len(entries) * ENTRY.size
    pieces = []
    for entry in entries:
        n = sum(entry.plane_bytes)
        pieces.append(decode_chunk(entry, data[offset : offset + n]))
        offset += n
    if not pieces:
        return torch.zeros(0, dtype=torch.int8, device=device)
    return torch.cat(pieces)
