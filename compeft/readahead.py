"""Byte ranges of files read ahead by worker threads into a ring of page-locked slots and copied to a GPU
asynchronously: the full-model passes on a GPU (fullmodel.Residual) wait neither for the reads nor for pageable
host-to-device copies. ``pread`` copies straight from the page cache (no page faults of a mapping), several
threads at once; a slot is refilled only once the copy that read it has finished (a CUDA event per slot).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from compeft.container import pread_into
from compeft.errors import AdapterFormatError

FileRange = tuple[Path, int, int]  # (file, byte offset, bytes)


def read_range(fd: int, out: memoryview, offset: int, where: Path) -> None:
    """Fill ``out`` from the file at ``offset`` (a file that ends early is an error naming it)."""
    if pread_into(fd, out, offset) != len(out):
        raise AdapterFormatError(f"{where}: ends before byte {offset + len(out)} (changed while being read?)")


class ReadAhead:
    """Jobs of FileRanges per slot column (e.g. a tensor's ranges in each of two models, read back to back into
    the column), read ``depth`` jobs ahead and handed back in order as uint8 tensors on ``device``."""

    def __init__(self, device: torch.device, slot_bytes: tuple[int, ...], depth: int) -> None:
        self.device, self.depth = device, depth
        pinned = device.type == "cuda"
        self.slots = [[torch.empty(max(n, 1), dtype=torch.uint8, pin_memory=pinned) for n in slot_bytes]
                      for _ in range(depth)]
        self.events = [torch.cuda.Event() if pinned else None for _ in range(depth)]
        self.pool = ThreadPoolExecutor(depth)
        self.fds: dict[Path, int] = {}
        self.lock = threading.Lock()

    def _fd(self, path: Path) -> int:
        with self.lock:
            if path not in self.fds:
                self.fds[path] = os.open(path, os.O_RDONLY)
            return self.fds[path]

    def _fill(self, slot: int, columns: tuple[tuple[FileRange, ...], ...]) -> list[torch.Tensor]:
        """Read each column's ranges into its column of the slot once the slot's last copy to the device is done:
        views of the slot's tensors (of the page-locked allocation itself, so copies from them are asynchronous)."""
        if self.events[slot] is not None:
            self.events[slot].synchronize()
        out = []
        for buf, ranges in zip(self.slots[slot], columns, strict=True):
            whole, at, path, fd = memoryview(buf.numpy()), 0, None, -1
            for where, offset, n in ranges:  # a sample's runs: thousands per job, so little Python per range
                if where is not path:
                    path, fd = where, self._fd(where)
                read_range(fd, whole[at : at + n], offset, path)
                at += n
            out.append(buf[:at])
        return out

    def run(self, jobs: Iterable[tuple[tuple[FileRange, ...], ...]]) -> Iterator[list[torch.Tensor]]:
        """Each job's bytes on the device, in order; valid until the caller asks for the next one (on a GPU: the
        copies are queued on the current stream before they are handed out)."""
        jobs = iter(jobs)
        pending: deque = deque()

        def submit(slot: int) -> None:
            job = next(jobs, None)
            if job is not None:
                pending.append((slot, self.pool.submit(self._fill, slot, job)))

        for slot in range(self.depth):
            submit(slot)
        try:
            while pending:
                slot, future = pending.popleft()
                out = future.result()
                if self.device.type != "cpu":
                    out = [h.to(self.device, non_blocking=True) for h in out]
                    self.events[slot].record()
                yield out
                submit(slot)  # on the CPU the caller is done with this slot's tensors once it asks for more
        finally:
            for _, future in pending:
                future.cancel()
            for _, future in pending:
                if not future.cancelled():
                    future.exception()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()
