"""The ``golomb`` bitstream: constants, the chunk table (parsed and checked in one place) and the error
messages every backend raises.

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

import numpy as np
import torch

from compeft.errors import CodecError

MAGIC = b"CPG1"
HEADER = struct.Struct("<4sQI")
ENTRY = struct.Struct("<IIIB3xII")
MAX_CHUNK = 1 << 20
TABLE_DTYPE = np.dtype(
    [("length", "<u4"), ("count", "<u4"), ("m", "<u4"), ("mode", "u1"), ("pad", "V3"), ("unary_bytes", "<u4"), ("extra_bits", "<u4")]
)
TABLE_COLUMNS = ("length", "count", "m", "mode", "unary_bytes", "extra_bits")
# the checks the vectorized backends run on the device, in the order their messages are raised
DEVICE_ERRORS = (
    "golomb chunk unary stream has a code count other than its table's",
    "golomb chunk unary stream has trailing bytes",
    "golomb chunk has non-zero padding bits",
    "golomb chunk extra-bit count differs from its table",
    "golomb chunk position is past its length",
)
ERR_COUNT, ERR_TRAILING, ERR_PADDING, ERR_EXTRA, ERR_RANGE = range(len(DEVICE_ERRORS))


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


def bit_length(x: np.ndarray) -> np.ndarray:
    """Python's int.bit_length for non-negative integers below 2^53, element-wise."""
    return np.frexp(x.astype(np.float64))[1].astype(np.int64)


def header_bytes(d: int, entries: np.ndarray) -> bytes:
    """The header and chunk table of a payload (``entries``: TABLE_DTYPE rows)."""
    return HEADER.pack(MAGIC, d, len(entries)) + entries.tobytes()


class ChunkTable:
    """The chunk table as int64 numpy columns, with each body's plane offsets (bytes into the payload)."""

    def __init__(self, length, count, m, mode, unary_bytes, extra_bits, body_start: int) -> None:
        self.length, self.count, self.m, self.mode = length, count, m, mode
        self.unary_bytes, self.extra_bits = unary_bytes, extra_bits
        self.b = bit_length(m - 1)
        self.width = np.maximum(self.b - 1, 0)
        self.u = (np.int64(1) << self.b) - m
        self.nonzeros = np.where(mode == 0, count, length - count)
        self.low_bytes = (count * self.width + 7) // 8
        self.extra_bytes = (extra_bits + 7) // 8
        self.sign_bytes = (self.nonzeros + 7) // 8
        self.body_bytes = unary_bytes + self.low_bytes + self.extra_bytes + self.sign_bytes
        ends = body_start + np.cumsum(self.body_bytes)
        self.unary_off = ends - self.body_bytes
        self.low_off = self.unary_off + unary_bytes
        self.extra_off = self.low_off + self.low_bytes
        self.sign_off = self.extra_off + self.extra_bytes
        self.start = np.cumsum(length) - length
        self.end = int(ends[-1]) if len(ends) else body_start

    def __len__(self) -> int:
        return len(self.length)


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
    if d > n_chunks * MAX_CHUNK:  # before the table is read: chunks hold at most MAX_CHUNK entries each
        raise CodecError(f"golomb payload of {n_chunks} chunks cannot describe d={d} entries (at most {MAX_CHUNK} a chunk)")
    return n_chunks


def read_table(payload: torch.Tensor, d: int) -> ChunkTable:
    """Parse and check the header and chunk table against the payload size and d (no Python loop over chunks)."""
    size = payload.numel()
    n_chunks = read_header(payload, d)
    body_start = HEADER.size + n_chunks * ENTRY.size
    host = payload if payload.device.type == "cpu" else payload[:body_start].cpu()
    raw = np.frombuffer(host[HEADER.size : body_start].contiguous().numpy().tobytes(), dtype=TABLE_DTYPE)
    cols = {name: raw[name].astype(np.int64) for name in TABLE_COLUMNS}
    length, count, m, mode, extra = cols["length"], cols["count"], cols["m"], cols["mode"], cols["extra_bits"]
    bad1 = ~((1 <= length) & (length <= MAX_CHUNK) & (count <= length) & ((mode == 0) | (mode == 1)))
    bad2 = ~((1 <= m) & (m <= length) & (extra <= count))
    bad3 = count > 8 * cols["unary_bytes"]  # every coded position ends with a one bit of its unary plane
    bad = np.flatnonzero(bad1 | bad2 | bad3)
    if bad.size:
        i = int(bad[0])
        if bad1[i]:
            raise CodecError(f"golomb chunk {i}: bad length/count/mode {length[i]}/{count[i]}/{mode[i]}")
        if bad2[i]:
            raise CodecError(f"golomb chunk {i}: bad parameter M={m[i]} or extra_bits={extra[i]}")
        raise CodecError(f"golomb chunk {i}: {count[i]} coded positions need more than its {cols['unary_bytes'][i]} unary bytes")
    table = ChunkTable(length, count, m, mode, cols["unary_bytes"], extra, body_start)
    total_len = int(length.sum())
    if total_len != d:
        raise CodecError(f"golomb chunks cover {total_len} entries, expected {d}")
    if table.end != size:
        raise CodecError(f"golomb payload is {size} bytes, its table describes {table.end}")
    return table
