"""Byte ranges of memory-mapped tensors read ahead by worker threads into a ring of page-locked slots and copied
to a GPU asynchronously: the full-model passes on a GPU (fullmodel.Residual) wait neither for page faults nor for
pageable host-to-device copies, and several threads fault the mapped pages in at once (numpy's copies release
the GIL). Slots are reused only once the copy that read them has finished (a CUDA event per slot).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

DEPTH = 3  # reads in flight (slots in the ring)


class ReadAhead:
    """Reads of ``(arrays, step)`` jobs, each a tuple of typed numpy views (a tensor's range in each model) and
    the stride to gather them with, handed back in order as device tensors of the same dtypes (contiguous)."""

    def __init__(self, device: torch.device, slot_bytes: tuple[int, ...], depth: int = DEPTH) -> None:
        self.device, self.depth = device, depth
        pinned = device.type == "cuda"
        self.slots = [[torch.empty(max(n, 1), dtype=torch.uint8, pin_memory=pinned) for n in slot_bytes]
                      for _ in range(depth)]
        self.events = [torch.cuda.Event() if pinned else None for _ in range(depth)]
        self.pool = ThreadPoolExecutor(depth)

    def _fill(self, slot: int, arrays: tuple[np.ndarray, ...], step: int) -> list[torch.Tensor]:
        """Copy (gather, for a step) each array into its slot once the slot's last copy to the device is done:
        views of the slot's tensors (of the page-locked allocation itself, so copies from them are asynchronous)."""
        if self.events[slot] is not None:
            self.events[slot].synchronize()
        out = []
        for buf, a in zip(self.slots[slot], arrays, strict=True):
            src = a[::step]
            view = buf[: src.nbytes].view(torch.from_numpy(src[:0].copy()).dtype)
            np.copyto(view.numpy(), src)
            out.append(view)
        return out

    def run(self, jobs: Iterable[tuple[tuple[np.ndarray, ...], int]]) -> Iterator[list[torch.Tensor]]:
        """The jobs' gathered arrays on the device, in order; each is valid until the caller asks for the next
        one ``depth`` later (the device copies are queued on the current stream before it is handed out)."""
        jobs = iter(jobs)
        pending: deque = deque()

        def submit(slot: int) -> None:
            job = next(jobs, None)
            if job is not None:
                pending.append((slot, self.pool.submit(self._fill, slot, *job)))

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
                submit(slot)  # on the CPU the caller is done with this slot's arrays once it asks for more
        finally:
            for _, future in pending:
                future.cancel()
            for _, future in pending:
                if not future.cancelled():
                    future.exception()

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
