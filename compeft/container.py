"""The ``compeft.safetensors`` container: a plain safetensors file with a checksummed JSON document.

Layout (normative; docs/format.md is the long form):

    u64 N (little-endian) | N bytes of JSON header (UTF-8, space padded to a multiple of 8) | data

The header maps tensor names to {dtype, shape, data_offsets} as safetensors defines, plus
``__metadata__`` = {"compeft": DOC, "compeft_sha256": hex sha256 of DOC's UTF-8 bytes}. Tensors:
``payload`` (U8, the codec's bytes), ``carried/<name>`` for every carried tensor and the per-tensor records:
from format version 3 one compact table ``records/table`` (record_table.py: a few bytes a record), in
version 2 six columns ``records/<column>`` (document.py), in version 1 a JSON list in DOC (which costs
milliseconds to parse for a 1000-tensor adapter). Data is laid out by
item size (largest first), then by name, with no gaps. DOC is compact JSON with sorted keys holding
format name and version, codec, k, α, σ, s, d, kept, source hashes, package version and ``checksums``:
the sha256 of every tensor's bytes (the record columns' are always checked, like DOC's own hash). N is
capped at 64 MiB. Readers refuse anything that does not match exactly; writers are deterministic.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compeft.dtypes import DTYPE_NAMES
from compeft.errors import ChecksumError, CodecError, ContainerError, UnknownCodecError
from compeft.limits import check_allocation
from compeft.safetensors_header import header_length, layout, parse_header, parse_json

FILENAME = "compeft.safetensors"
FORMAT_NAME = "compeft"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
PAYLOAD = "payload"
CARRIED_PREFIX = "carried/"
RECORDS_PREFIX = "records/"
DOC_KEY, DOC_HASH_KEY = "compeft", "compeft_sha256"


@dataclass(frozen=True)
class Container:
    """A container read back: the document, the codec payload (uint8), the carried tensors and (version ≥ 2)
    the record columns."""

    path: Path
    doc: dict
    payload: torch.Tensor = field(repr=False)
    carried: dict[str, torch.Tensor] = field(repr=False)
    file_bytes: int
    records: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def tensor_bytes(t: torch.Tensor) -> bytes:
    """Raw little-endian bytes of a CPU tensor."""
    t = t.detach().contiguous().cpu()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def encode_document(doc: Mapping) -> str:
    """Canonical JSON text of the document: sorted keys, compact separators, finite numbers."""
    try:
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError as err:
        raise ContainerError(f"document holds a non-finite number: {err}") from err


def encode_header(header: Mapping) -> bytes:
    """Canonical bytes of the safetensors header: compact JSON with sorted keys, space padded so that the data
    section starts at a multiple of 8."""
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    return raw + b" " * (-(8 + len(raw)) % 8)


def write_container(
    path: Path, doc: Mapping, payload: torch.Tensor, carried: Mapping[str, torch.Tensor], records: Mapping[str, torch.Tensor]
) -> int:
    """Write the container deterministically; returns its size in bytes. ``doc`` gets ``checksums``."""
    tensors = {PAYLOAD: payload.reshape(-1).to(torch.uint8)}
    tensors.update({CARRIED_PREFIX + name: t for name, t in carried.items()})
    tensors.update({RECORDS_PREFIX + name: t for name, t in records.items()})
    order = sorted(tensors, key=lambda n: (-_itemsize(tensors[n].dtype), n))
    blobs = {name: tensor_bytes(tensors[name]) for name in order}
    full_doc = dict(doc)
    full_doc["checksums"] = {name: hashlib.sha256(blobs[name]).hexdigest() for name in sorted(blobs)}
    text = encode_document(full_doc)
    header: dict = {"__metadata__": {DOC_KEY: text, DOC_HASH_KEY: hashlib.sha256(text.encode()).hexdigest()}}
    offset = 0
    for name in order:
        t = tensors[name]
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(blobs[name])]}
        offset += len(blobs[name])
    raw = encode_header(header)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in order:
            f.write(blobs[name])
        f.flush()
        os.fsync(f.fileno())
    return 8 + len(raw) + offset


def _parse_document(path: Path, header: dict) -> dict:
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or not isinstance(meta.get(DOC_KEY), str):
        raise ContainerError(f"{path}: not a compeft container (no compeft document in __metadata__)")
    text = meta[DOC_KEY]
    if hashlib.sha256(text.encode()).hexdigest() != meta.get(DOC_HASH_KEY):
        raise ChecksumError(f"{path}: checksum mismatch in the compeft document")
    doc = parse_json(text, "compeft document", path, ContainerError)
    try:
        canonical = encode_document(doc) == text
    except ContainerError as err:
        raise ContainerError(f"{path}: {err}") from err
    if not canonical:  # one text per document: no second reading of the checksummed bytes
        raise ContainerError(f"{path}: the compeft document is not in canonical form (compact JSON, sorted keys)")
    if doc.get("format") != FORMAT_NAME:
        raise ContainerError(f"{path}: document format is {doc.get('format')!r}, not {FORMAT_NAME!r}")
    version = doc.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ContainerError(
            f"{path}: format version {version!r} is not supported (this build reads {', '.join(map(str, READABLE_VERSIONS))})"
        )
    return doc


@contextmanager
def named_payload_errors(path: Path) -> Iterator[None]:
    """Prefix codec errors raised while decoding a container's payload with the container's path."""
    try:
        yield
    except (CodecError, UnknownCodecError) as err:
        raise type(err)(f"{path}: {err}") from err


def parse_container(data: torch.Tensor, path: Path, *, verify: bool = True,
                    prefetch: Callable[[torch.Tensor], None] | None = None) -> Container:
    """Check a container image held in a uint8 CPU tensor; its tensors are views of ``data``. ``prefetch``
    gets the (unchecked) payload as soon as the layout is known, e.g. to start copying it to a device."""
    flat = data.reshape(-1)
    raw = memoryview(flat.numpy())
    header, start = parse_header(raw, path)
    if bytes(raw[8:start]) != encode_header(header):
        raise ContainerError(f"{path}: the header is not in canonical form (compact JSON, sorted keys, space padded)")
    tensors = None
    if prefetch is not None:
        try:
            tensors = layout(header, len(raw) - start, path)
        except ContainerError:
            tensors = None  # raised again below, after the document's errors, as without prefetch
        if tensors is not None and PAYLOAD in tensors and tensors[PAYLOAD][0] == torch.uint8:
            prefetch(flat[start + tensors[PAYLOAD][2] : start + tensors[PAYLOAD][3]])
    doc = _parse_document(path, header)
    if tensors is None:
        tensors = layout(header, len(raw) - start, path)
    checksums = doc.get("checksums")
    if not isinstance(checksums, dict) or set(checksums) != set(tensors):
        raise ContainerError(f"{path}: checksums do not list exactly the tensors in the file")
    if PAYLOAD not in tensors or tensors[PAYLOAD][0] != torch.uint8:
        raise ContainerError(f"{path}: no uint8 {PAYLOAD!r} tensor")
    views = {}
    for name, (dtype, shape, a, b) in tensors.items():
        # the record columns are part of the document: always checked, as its hash is
        if verify or name.startswith(RECORDS_PREFIX):
            _match(path, name, hashlib.sha256(raw[start + a : start + b]).hexdigest(), checksums[name])
        views[name] = flat[start + a : start + b].view(dtype).reshape(shape)
    carried = {n[len(CARRIED_PREFIX) :]: t for n, t in views.items() if n.startswith(CARRIED_PREFIX)}
    records = {n[len(RECORDS_PREFIX) :]: t for n, t in views.items() if n.startswith(RECORDS_PREFIX)}
    if doc["format_version"] == 1 and len(carried) + 1 != len(views):
        raise ContainerError(f"{path}: holds tensors other than {PAYLOAD!r} and {CARRIED_PREFIX}*")
    if doc["format_version"] >= 2 and len(carried) + len(records) + 1 != len(views):
        raise ContainerError(f"{path}: holds tensors other than {PAYLOAD!r}, {CARRIED_PREFIX}* and {RECORDS_PREFIX}*")
    return Container(path, doc, views[PAYLOAD].reshape(-1), carried, len(raw), records)


def _match(path: Path, name: str, digest: str, expected: str) -> None:
    if digest != expected:
        raise ChecksumError(f"{path}: checksum mismatch in tensor {name!r}")


def image_digests(data: torch.Tensor, path: Path) -> dict[str, str]:
    """The sha256 of every tensor of a container image that ``parse_container(verify=False)`` leaves unchecked
    (all but the record columns), in file-header order: ``verify``'s work done apart, e.g. in a worker thread
    while the payload decodes (hashlib releases the GIL); ``check_digests`` compares them."""
    raw = memoryview(data.reshape(-1).numpy())
    header, start = parse_header(raw, path)
    tensors = layout(header, len(raw) - start, path)
    return {name: hashlib.sha256(raw[start + a : start + b]).hexdigest()
            for name, (_, _, a, b) in tensors.items() if not name.startswith(RECORDS_PREFIX)}


def check_digests(container: Container, digests: Mapping[str, str]) -> None:
    """ChecksumError (as ``parse_container(verify=True)`` raises it) unless ``digests`` (image_digests of the
    container's image) match every checksum its document lists."""
    checksums = container.doc["checksums"]
    for name, digest in digests.items():
        _match(container.path, name, digest, checksums.get(name))


def container_path(path: str | Path) -> Path:
    """The container file of an artifact directory, or the path itself when it names a file."""
    path = Path(path)
    return path / FILENAME if path.is_dir() else path


def read_bytes(path: Path, *, pin: bool = False) -> torch.Tensor:
    """A container file's bytes as a uint8 tensor (page-locked when ``pin`` and CUDA is present). Only the
    header is read first: its length against the cap and the file size, then its tensors against the rest of
    the file (they must cover it exactly), then the file's size against the memory limit; then the file."""
    return read_file(path, pin=pin)[0]


def file_identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes whenever a file's bytes may have: device, inode, size, mtime and ctime (ns)."""
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


READ_PIECE = 2 << 20  # read_file's pieces when it reads with several threads


def pread_into(fd: int, view: memoryview, offset: int) -> int:
    """Read len(view) bytes at ``offset`` into ``view``; the count read (short only at the end of the file)."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            break
        done += got
    return done


def read_file(path: Path, *, pin: bool = False, executor: Executor | None = None) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``read_bytes`` and the file's identity (``file_identity``) when it was opened. With ``executor``, pieces of
    READ_PIECE bytes are read by its threads at once (file reads release the GIL); it must not be the executor
    running this call, whose threads could all be waiting here."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            size = st.st_size
            n = header_length(f.read(8), size, path)
            layout(parse_json(f.read(n), "header", path, ContainerError), size - 8 - n, path)
            check_allocation(size, f"{path}: reading the container")
            buf = torch.empty(size, dtype=torch.uint8, pin_memory=pin and torch.cuda.is_available())
            view = memoryview(buf.numpy())
            piece = READ_PIECE if executor is not None else size
            jobs = [(f.fileno(), view[a : a + piece], a) for a in range(0, size, piece)]
            reader = executor.map if executor is not None and len(jobs) > 1 else map
            if sum(reader(pread_into, *zip(*jobs))) != size:
                raise ContainerError(f"{path}: changed while being read")
    except FileNotFoundError:
        raise ContainerError(f"{path}: missing") from None
    except OSError as err:
        raise ContainerError(f"{path}: cannot be read ({err.strerror})") from err
    return buf, file_identity(st)


def read_container(path: str | Path, *, verify: bool = True, pin: bool = False) -> Container:
    """Read and check a container: header, document hash, layout, and (by default) every checksum."""
    path = container_path(path)
    return parse_container(read_bytes(path, pin=pin), path, verify=verify)


# Streaming entry points (issue 17: full fine-tunes larger than memory). The writer produces the same bytes as
# write_container from tensors given as pieces (byte strings, numpy views of mapped files, spill files) that are
# hashed in one read and copied in a second, so no tensor is ever held whole; the reader maps the file instead
# of reading it, so the payload and the carried tensors stay file pages.

COPY_BLOCK = 16 << 20


@dataclass(frozen=True)
class StreamedTensor:
    """A tensor to write as the concatenation of ``parts``: bytes, uint8 numpy arrays (e.g. views of a mapped
    file) or whole files, read in bounded blocks."""

    dtype: torch.dtype
    shape: tuple[int, ...]
    parts: tuple = ()

    def blocks(self) -> Iterator[memoryview]:
        """The tensor's bytes in order, at most COPY_BLOCK at a time."""
        for part in self.parts:
            if isinstance(part, Path):
                with open(part, "rb") as f:
                    while block := f.read(COPY_BLOCK):
                        yield memoryview(block)
                continue
            view = memoryview(part).cast("B") if not isinstance(part, memoryview) else part.cast("B")
            for start in range(0, len(view), COPY_BLOCK):
                yield view[start : start + COPY_BLOCK]

    def nbytes(self) -> int:
        return sum(p.stat().st_size if isinstance(p, Path) else memoryview(p).nbytes for p in self.parts)


def streamed(t: torch.Tensor) -> StreamedTensor:
    """An in-memory tensor as a StreamedTensor (its bytes as write_container writes them)."""
    return StreamedTensor(t.dtype, tuple(t.shape), (tensor_bytes(t),))


def write_container_streamed(path: Path, doc: Mapping, tensors: Mapping[str, StreamedTensor]) -> int:
    """write_container's bytes for tensors given in pieces (``tensors`` holds ``payload``, ``carried/<name>`` and
    ``records/<column>`` by their container names); returns the file size. Memory stays bounded by COPY_BLOCK."""
    from compeft.safetensors_header import encode_header

    order = sorted(tensors, key=lambda n: (-_itemsize(tensors[n].dtype), n))
    sizes, digests = {}, {}
    for name in order:
        h = hashlib.sha256()
        for block in tensors[name].blocks():
            h.update(block)
        digests[name], sizes[name] = h.hexdigest(), tensors[name].nbytes()
    full_doc = dict(doc)
    full_doc["checksums"] = {name: digests[name] for name in sorted(digests)}
    text = encode_document(full_doc)
    header: dict = {"__metadata__": {DOC_KEY: text, DOC_HASH_KEY: hashlib.sha256(text.encode()).hexdigest()}}
    offset = 0
    for name in order:
        t = tensors[name]
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + sizes[name]]}
        offset += sizes[name]
    head = encode_header(header)
    with open(path, "wb") as f:
        f.write(head)
        for name in order:
            written = 0
            for block in tensors[name].blocks():
                f.write(block)
                written += len(block)
            if written != sizes[name]:
                raise ContainerError(f"{path}: tensor {name!r} changed while being written")
        f.flush()
        os.fsync(f.fileno())
    return len(head) + offset


def map_container(path: str | Path, *, verify: bool = True) -> Container:
    """read_container without reading: the file is memory-mapped (copy-on-write, never written), so its tensors
    are views of file pages and a container of any size costs no anonymous memory."""
    import numpy as np

    path = container_path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header_length(f.read(8), size, path)
        data = np.memmap(path, dtype=np.uint8, mode="c")
    except FileNotFoundError:
        raise ContainerError(f"{path}: missing") from None
    except OSError as err:
        raise ContainerError(f"{path}: cannot be read ({err.strerror})") from err
    return parse_container(torch.from_numpy(data), path, verify=verify)
