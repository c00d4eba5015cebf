"""The planes of several artifact files at once, pipelined (a pair from files in a few ms on a GPU).

Each file is read by worker threads in pieces (into page-locked memory when the planes go to a GPU) and, when
checksums are verified, hashed by another worker as soon as it is in (file reads and hashlib release the GIL),
beside the decodes. The calling thread
parses and checks each container as soon as its bytes are in, and queues its payload's copy, decode, packing and
count on the device without waiting, so the device decodes one artifact while the host parses the next; one
synchronization at the end reads every decode's error flags and support count. Results and errors are
``open_planes``'s, artifact by artifact in input order (an artifact's checksum mismatch before what its decode
found). A file whose every checksum matched once in this process and that has not changed since (same device,
inode, size, mtime and ctime) is not hashed again.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from compeft.artifact import Artifact
from compeft.codecs import get_codec
from compeft.codecs.base import ternary_values
from compeft.container import Container, check_digests, container_path, image_digests, named_payload_errors, parse_container, read_file
from compeft.document import check
from compeft.errors import CompeftError
from compeft.fastload import Prefetch, paused_gc
from compeft.limits import check_allocation
from compeft.ops.planes import TernaryPlanes, artifact_planes, planes_from_ternary

WORKERS = 8
VERIFIED_FILES = 4096  # files remembered as verified (least recently verified forgotten first)

_pools: dict[str, ThreadPoolExecutor] = {}
_pool_lock = threading.Lock()
_verified: OrderedDict[tuple, dict] = OrderedDict()  # (path, file identity) -> the checksums that matched
_verified_lock = threading.Lock()


def _executor(role: str) -> ThreadPoolExecutor:
    """The long-lived pool of ``role``: "files" runs a job per file (read, hash), "pieces" the pieces of a read
    (leaf jobs: a file job may wait for them, never the other way round)."""
    with _pool_lock:
        if role not in _pools:
            workers = max(2, min(WORKERS, os.cpu_count() or 1))
            _pools[role] = ThreadPoolExecutor(workers, thread_name_prefix=f"compeft-{role}")
        return _pools[role]


def _after_fork() -> None:
    """A forked child has none of the parent's threads: it makes its own pools (and locks) when it needs them."""
    global _pool_lock, _verified_lock
    _pools.clear()
    _pool_lock, _verified_lock = threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_after_fork)


def forget_verified() -> None:
    """Forget which files were verified: every file is hashed again on its next open (benchmarks, tests)."""
    with _verified_lock:
        _verified.clear()


def _was_verified(key: tuple, checksums: dict | None = None) -> bool:
    with _verified_lock:
        known = _verified.get(key)
        return known is not None and (checksums is None or known == checksums)


def _remember(key: tuple, checksums: dict) -> None:
    with _verified_lock:
        _verified[key] = dict(checksums)
        _verified.move_to_end(key)
        while len(_verified) > VERIFIED_FILES:
            _verified.popitem(last=False)


@dataclass
class _Read:
    image: torch.Tensor
    key: tuple
    digests: Future | None  # image_digests being made; None: not hashed (verify off, or verified earlier)


def _read(path: Path, pin: bool, verify: bool) -> _Read:
    """Read a file (in pieces) and start hashing it; returns once the bytes are in, not the hashes."""
    image, identity = read_file(path, pin=pin, executor=_executor("pieces"))
    key = (str(path), identity)
    hashing = verify and not _was_verified(key)
    return _Read(image, key, _executor("files").submit(image_digests, image, path) if hashing else None)


@dataclass
class _Opened:
    """One artifact whose decode is queued: what finishing it needs."""

    read: _Read
    container: Container
    artifact: Artifact | None = None
    finish: object = None
    support: torch.Tensor | None = None
    negative: torch.Tensor | None = None
    kept: int | None = None
    error: CompeftError | None = None

    def verify(self) -> None:
        """ChecksumError unless every checksum matched (the hashes from the worker, or made now when the file was
        remembered as verified but lists other checksums)."""
        read, checksums = self.read, self.container.doc["checksums"]
        if read.digests is None and _was_verified(read.key, checksums):
            return
        digests = read.digests.result() if read.digests is not None else image_digests(read.image, self.container.path)
        check_digests(self.container, digests)
        _remember(read.key, checksums)


def _launch(path: Path, read: Future, device: torch.device, count: torch.Tensor | None, verify: bool) -> _Opened:
    """Parse and check one container and queue its decode and packing on ``device`` (no synchronization)."""
    prefetch = Prefetch(device) if device.type == "cuda" else None
    done = read.result()
    opened = _Opened(done, parse_container(done.image, path, verify=False, prefetch=prefetch))
    try:
        document, records = check(opened.container)
        opened.artifact = Artifact(opened.container, document, records)
        codec, payload = get_codec(document.codec), opened.container.payload
        with named_payload_errors(path):
            plan = codec.prepare(payload, document.d)  # before d entries are allocated
        check_allocation(document.d, f"{path}: decoding {document.d:,} entries")
        signs = torch.empty(document.d, dtype=torch.int8, device=device)
        with named_payload_errors(path):
            opened.finish = codec.decode_into(plan, payload, signs, ternary_values(),
                                              staged=prefetch.staged if prefetch is not None else None)
        if device.type == "cuda":
            from compeft.ops.triton_popcount import count_into, pack_ternary

            opened.support, opened.negative = pack_ternary(signs)
            count_into(opened.support, count)
        else:
            with named_payload_errors(path):
                opened.finish()
            planes = planes_from_ternary(signs, scale=document.scale, records=records, label="")
            opened.support, opened.negative, opened.kept = planes.support, planes.negative, planes.kept
    except CompeftError:
        if verify:
            opened.verify()  # a bad payload's checksum is the first thing to report
        raise
    return opened


def _finish(opened: list[_Opened], counts: torch.Tensor | None, verify: bool) -> list[TernaryPlanes]:
    """Wait for the device once, then check each artifact in order: checksums, decode errors, kept count."""
    for o in opened:
        try:
            with named_payload_errors(o.container.path):
                o.finish()  # the first one waits for the device
        except CompeftError as err:
            o.error = err
    if counts is not None:
        for o, kept in zip(opened, counts[: len(opened)].tolist()):
            o.kept = kept
    planes = []
    for o in opened:
        if verify:
            o.verify()
        if o.error is not None:
            raise o.error
        planes.append(artifact_planes(o.artifact, o.support, o.negative, o.kept))
    return planes


def open_many(paths: Sequence[str | Path], device: str | torch.device = "cpu", *, verify: bool = True) -> list[TernaryPlanes]:
    """``[open_planes(p, device, verify=verify) for p in paths]``, pipelined (module docstring): the same planes
    and the same first error."""
    device = torch.device(device)
    files = [container_path(p) for p in paths]
    cuda = device.type == "cuda"
    if cuda and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # the device the decode's streams are kept for
    reads = [_executor("files").submit(_read, f, cuda, verify) for f in files]
    counts = torch.zeros(len(files), dtype=torch.int64, device=device) if cuda else None
    opened: list[_Opened] = []
    with paused_gc(), torch.no_grad():  # a collection midway would cost milliseconds
        for i, (path, read) in enumerate(zip(files, reads)):
            try:
                opened.append(_launch(path, read, device, counts[i : i + 1] if cuda else None, verify))
            except CompeftError:
                _finish(opened, counts, verify)  # an earlier artifact's error comes first
                raise
        return _finish(opened, counts, verify)


def planes_of(items: Sequence[str | Path | TernaryPlanes], device: str | torch.device, *,
              verify: bool = True) -> list[TernaryPlanes]:
    """Each item's planes on ``device``, in order: planes already open are moved, files opened by ``open_many``."""
    device = torch.device(device)
    opened = iter(open_many([p for p in items if not isinstance(p, TernaryPlanes)], device, verify=verify))
    return [p.to(device) if isinstance(p, TernaryPlanes) else next(opened) for p in items]
