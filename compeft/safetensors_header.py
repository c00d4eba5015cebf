"""The one safetensors header parser (containers, adapter weights, the registry's adapter facts, remote headers
read by byte ranges):

    u64 N (little-endian) | N bytes of JSON header | data section

N is capped before anything else is read; the header must be a JSON object without repeated keys; each
tensor's entry must have a known dtype, a shape of non-negative integers and byte offsets that match it, and
the tensors must cover the data section exactly, without gaps. Errors are one line of the caller's error
class naming the file.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from compeft.dtypes import DTYPES_BY_NAME
from compeft.errors import CompeftError, ContainerError

MAX_HEADER_BYTES = 64 << 20
FIRST_READ = 100_000  # a remote header's first range: most headers fit (huggingface_hub reads as much)
METADATA = "__metadata__"

Layout = dict[str, tuple[torch.dtype, tuple[int, ...], int, int]]  # name → (dtype, shape, start, end) in the data


def header_length(prefix: bytes, size: int, where, error: type[CompeftError] = ContainerError) -> int:
    """N from the first 8 bytes of a file of ``size`` bytes, checked against the cap and the size."""
    if size < 8 or len(prefix) < 8:
        raise error(f"{where}: {size} bytes, too short for a safetensors header")
    (n,) = struct.unpack_from("<Q", prefix, 0)
    if n > MAX_HEADER_BYTES:
        raise error(f"{where}: header length {n} exceeds the {MAX_HEADER_BYTES}-byte cap")
    if 8 + n > size:
        raise error(f"{where}: truncated (header says {n} bytes, file has {size - 8} after the length)")
    return n


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"repeated key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def parse_json(text: bytes | str, what: str, where, error: type[CompeftError]) -> dict:
    """A JSON object with unique keys (nesting deeper than Python allows is an error too)."""
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise error(f"{where}: {what} is not valid JSON ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from err
    if not isinstance(value, dict):
        raise error(f"{where}: {what} is not a JSON object")
    return value


def parse_header(data: memoryview | bytes, where, error: type[CompeftError] = ContainerError) -> tuple[dict, int]:
    """(header, offset of the data section) of a safetensors image held in memory."""
    n = header_length(bytes(data[:8]), len(data), where, error)
    return parse_json(bytes(data[8 : 8 + n]), "header", where, error), 8 + n


def read_header(path: Path, error: type[CompeftError] = ContainerError) -> tuple[dict, int, int]:
    """(header, offset of the data section, file size) of a safetensors file; only the header is read."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header, start = fetch_header(lambda at, n: (f.seek(at), f.read(n))[1], size, path, error, first=8)
    except OSError as err:
        raise error(f"{path}: cannot be read ({err.strerror or err})") from err
    return header, start, size


def fetch_header(read: Callable[[int, int], bytes], size: int, where, error: type[CompeftError] = ContainerError,
                 first: int = FIRST_READ) -> tuple[dict, int]:
    """(header, offset of the data section) of a safetensors file of ``size`` bytes that ``read(start, length)``
    reads a byte range of (a file, an HTTP range request): the first ``first`` bytes, then the rest of the header
    when it is longer — never more of the data section than the first read holds."""
    head = read(0, min(size, max(first, 8))) if size >= 8 else b""
    n = header_length(head[:8], size, where, error)
    raw = head[8 : 8 + n]
    if len(raw) < n:
        raw += read(8 + len(raw), n - len(raw))
    if len(raw) != n:
        raise error(f"{where}: truncated (read {len(raw)} of the header's {n} bytes)")
    return parse_json(raw, "header", where, error), 8 + n


def layout(header: Mapping, data_len: int, where, error: type[CompeftError] = ContainerError) -> Layout:
    """Every tensor's (dtype, shape, start, end), checked against its entry and the data section."""
    tensors: Layout = {}
    for name, info in header.items():
        if name == METADATA:
            continue
        try:
            dtype = DTYPES_BY_NAME[info["dtype"]]
            shape, offsets = info["shape"], info["data_offsets"]
            if not all(type(x) is int for x in [*shape, *offsets]) or len(offsets) != 2:
                raise TypeError("shape and data_offsets must be integers")
        except (KeyError, TypeError) as err:
            raise error(f"{where}: tensor {name!r} has a malformed header entry {str(info)[:200]}") from err
        if any(s < 0 for s in shape):
            raise error(f"{where}: tensor {name!r} has a negative dimension")
        start, end = offsets
        if end - start != math.prod(shape) * dtype.itemsize:
            raise error(f"{where}: tensor {name!r} shape {list(shape)} does not match its {end - start} bytes")
        tensors[name] = (dtype, tuple(shape), start, end)
    position = 0
    for start, end in sorted((t[2], t[3]) for t in tensors.values()):
        if start != position:
            raise error(f"{where}: tensor data offsets are not contiguous at byte {start}")
        position = end
    if position != data_len:
        raise error(f"{where}: data section is {data_len} bytes, tensors cover {position} (truncated or padded)")
    return tensors


def encode_header(header: Mapping) -> bytes:
    """The length prefix and JSON header of a safetensors file (sorted keys, compact, space padded so that the data
    section starts at a multiple of 8): what the writers put before the data."""
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    return struct.pack("<Q", len(raw)) + raw
