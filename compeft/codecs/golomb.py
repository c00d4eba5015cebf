"""Codec ``golomb``: chunked, adaptive Golomb coding of the sparse ternary τ (the storage default).

Bitstream (normative; all integers little-endian):

    header   magic b"CPG1" | u64 d | u32 n_chunks                                   (16 bytes)
    table    n_chunks × { u32 length | u32 count | u32 M | u8 mode | 3 zero bytes
                          | u32 unary_bytes | u32 extra_bits }                       (24 bytes each)
    bodies   one per chunk, in table order: unary | low | extra | sign

Chunks cover τ in order (lengths sum to d, each 1..2^20); the encoder starts a new chunk at every
tensor boundary, so each chunk has its own density. mode 0 codes the positions of the non-zero
entries, mode 1 (chosen when more than half are non-zero) the positions of the zeros; ``count`` is
the number of coded positions. Gaps g_j = p_j − p_{j−1} − 1 (p_{−1} = −1) are Golomb coded with
parameter M ≥ 1 (M = ⌈−log(2−p)/log(1−p)⌉ for p = count/length): quotient q = g div M in ``unary``
(q zero bits then a one bit; unary_bytes = ⌈(last one bit + 1)/8⌉), remainder r = g mod M in
truncated binary with b = ⌈log2 M⌉, u = 2^b − M: the top b−1 bits h go to ``low`` as fixed-width
fields (h = r if r < u, else (r+u) >> 1), and when h ≥ u the last bit (r+u) & 1 goes to ``extra``
(M = 1 has neither). ``sign`` has one bit per non-zero entry in position order, 1 for −1. Every
plane is bit-packed LSB first, zero padded to whole bytes; the payload ends exactly after the last
body. Each chunk decodes on its own, so chunks decode in parallel on CPU cores or on a GPU.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from compeft.codecs.bits import (
    pack_bits,
    pack_fields,
    padding_is_zero,
    unpack_bits,
    unpack_fields,
)
from compeft.errors import CodecError

MAGIC = b"CPG1"
HEADER = struct.Struct("<4sQI")
ENTRY = struct.Struct("<IIIB3xII")
MAX_CHUNK = 1 << 20


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


def golomb_parameter(count: int, length: int) -> int:
    """Golomb's optimal M for geometric gaps with success probability count/length."""
    if count == 0 or 2 * count >= length:
        return 1
    p = count / length
    return max(1, math.ceil(-math.log(2.0 - p) / math.log(1.0 - p)))


def chunk_lengths(d: int, segments: Sequence[int]) -> list[int]:
    """Chunk lengths: every segment (tensor) split into pieces of at most MAX_CHUNK."""
    segments = list(segments) or [d]
    if sum(segments) != d or any(s < 0 for s in segments):
        raise CodecError(f"segment lengths sum to {sum(segments)}, not d={d}")
    return [min(MAX_CHUNK, s - start) for s in segments for start in range(0, s, MAX_CHUNK)]


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


def read_header(payload: torch.Tensor, d: int) -> int:
    """Check the 16-byte header against the payload size and d; returns the number of chunks."""
    size = payload.numel()
    if size < HEADER.size:
        raise CodecError(f"golomb payload is {size} bytes, shorter than its {HEADER.size}-byte header")
    magic, stored_d, n_chunks = HEADER.unpack(payload[: HEADER.size].cpu().numpy().tobytes())
    if magic != MAGIC:
        raise CodecError(f"golomb payload has magic {magic!r}, expected {MAGIC!r}")
    if stored_d != d:
        raise CodecError(f"golomb payload codes d={stored_d}, the container says d={d}")
    if n_chunks > max(d, 0) or HEADER.size + n_chunks * ENTRY.size > size:
        raise CodecError(f"golomb payload announces {n_chunks} chunks, more than its {size} bytes can hold")
    return n_chunks


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


class GolombCodec:
    """Near-entropy sparse ternary code, adaptive per chunk, chunks independently decodable."""

    id = "golomb"

    def encode(self, signs: torch.Tensor, segments: Sequence[int] = ()) -> torch.Tensor:
        """The payload (CPU uint8): numpy per chunk in threads on CPU, one vectorized pass on GPU.

        Both give the bytes of encode_reference."""
        if signs.device.type == "cpu":
            from compeft.codecs.golomb_cpu import encode_cpu

            return encode_cpu(signs, segments)
        from compeft.codecs.golomb_fast import encode_fast

        return encode_fast(signs, segments)

    def decode(self, payload: torch.Tensor, d: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """The int8 ternary τ on ``device``, decoded by the vectorized decoder (same as decode_reference)."""
        return self.decode_values(payload, d, device, None)

    def decode_values(self, payload: torch.Tensor, d: int, device: torch.device | str = "cpu", values: torch.Tensor | None = None) -> torch.Tensor:
        """τ mapped through ``values`` = (v₋₁, v₀, v₊₁) on ``device`` (int8 τ when None); CPU decodes chunks in threads."""
        device = torch.device(device)
        if device.type == "cpu":
            from compeft.codecs.golomb_cpu import decode_cpu

            return decode_cpu(payload, d, values)
        from compeft.codecs.golomb_fast import decode_fast

        return decode_fast(payload, d, device, values)

    def decode_values_deferred(self, payload: torch.Tensor, d: int, device: torch.device | str, values: torch.Tensor):
        """(output, finish): decode_values whose payload checks run when ``finish()`` is called (it waits
        for the device and raises CodecError on a bad payload); the output must not be used before."""
        device = torch.device(device)
        if device.type == "cpu":
            return self.decode_values(payload, d, device, values), lambda: None
        from compeft.codecs.golomb_fast import decode_fast

        pending: list = []
        out = decode_fast(payload, d, device, values, deferred=pending)
        return out, (lambda: [f() for f in pending] and None)

    def encode_reference(self, signs: torch.Tensor, segments: Sequence[int] = ()) -> torch.Tensor:
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

    def decode_reference(self, payload: torch.Tensor, d: int, device: torch.device | str = "cpu") -> torch.Tensor:
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
