"""Codec ``golomb``: chunked, adaptive Golomb coding of the sparse ternary τ (the storage default).

The bitstream is specified in ``format``; one module per backend codes it: ``numpy_backend`` (CPU,
chunk groups in threads), ``torch_backend`` (vectorized over chunks: the GPU encoder, and the decoder
where Triton is missing) and ``triton_backend`` (the CUDA decoder). Every backend writes the same bytes
and raises on the same payloads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from compeft.codecs.base import Codec
from compeft.codecs.golomb import numpy_backend
from compeft.codecs.golomb.format import (
    TABLE_COLUMNS,
    TABLE_DTYPE,
    ChunkTable,
    chunk_lengths,
    header_bytes,
    read_table,
)
from compeft.codecs.staging import StagedPayload, padded_buffer, side_stream
from compeft.limits import check_allocation


def triton_available() -> bool:
    """True when Triton imports (it needs a CUDA build of torch, or TRITON_INTERPRET=1 for tests)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class GolombPlan:
    """A checked chunk table, its mode-0 and mode-1 chunk ids, and the Triton plans made from it (kept per
    device and value table, so a payload decoded many times is planned once)."""

    table: ChunkTable
    mode0: np.ndarray
    mode1: np.ndarray
    _columns: dict = field(default_factory=dict, repr=False)

    def cached_columns(self, device: torch.device, values: torch.Tensor):
        """The Triton plan columns made earlier for this device and value table, or None."""
        return self._columns.get(_plan_key(device, values))

    def columns(self, device: torch.device, values: torch.Tensor):
        """The Triton plan columns for this device and value table (made on first use, page-locked on CUDA)."""
        key = _plan_key(device, values)
        if key not in self._columns:
            from compeft.codecs.golomb.triton_backend import plan_columns

            self._columns[key] = plan_columns(self.table, self.mode0, device, values)
        return self._columns[key]


def _plan_key(device: torch.device, values: torch.Tensor) -> tuple:
    return device, values.dtype, values.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()


def _done() -> None:
    return None


class GolombStreamEncoder:
    """Chunk bodies appended to one spill file in chunk order; the header and chunk table are made at the end.
    With ``threads`` > 1 the chunks are encoded in a thread pool (numpy releases the GIL), a bounded window of
    them in flight, and written in order as they complete."""

    def __init__(self, d: int, segments: Sequence[int], spill: Path, threads: int = 1) -> None:
        self.d, self.lengths = d, chunk_lengths(d, segments)
        self.path = spill / "golomb-bodies"
        self.file = open(self.path, "wb")  # noqa: SIM115 - closed in finish
        self.entries: list[tuple[int, ...]] = []
        self.added = 0
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None
        self.window, self.pending = 2 * threads, deque()

    def add(self, length: int, positions: np.ndarray, negative: np.ndarray) -> None:
        """The next chunk's non-zero entries (arrays the encoder may keep until the chunk is written)."""
        if self.added >= len(self.lengths) or length != self.lengths[self.added]:
            raise ValueError(f"golomb stream: chunk {self.added} of length {length} does not follow the chunking")
        self.added += 1
        if self.pool is None:
            self._write(numpy_backend.encode_positions(length, positions, negative))
            return
        self.pending.append(self.pool.submit(numpy_backend.encode_positions, length, positions, negative))
        while len(self.pending) > self.window:
            self._write(self.pending.popleft().result())

    def add_signs(self, signs: torch.Tensor, lengths: Sequence[int]) -> None:
        """The next chunks as dense int8 signs, coded where they live (torch_backend: vectorized over the chunks;
        the same bytes as ``add``), the bodies copied back once."""
        from compeft.codecs.golomb import torch_backend

        expected = self.lengths[self.added : self.added + len(lengths)]
        if list(lengths) != list(expected) or sum(expected) != signs.numel():
            raise ValueError(f"golomb stream: chunks {self.added}.. of lengths {list(lengths)[:4]}… do not follow the chunking")
        rows, body = torch_backend.encode_chunks(signs.reshape(-1), np.asarray(lengths, dtype=np.int64))
        while self.pending:
            self._write(self.pending.popleft().result())
        self.added += len(lengths)
        self.entries.extend(tuple(int(row[c]) for c in TABLE_COLUMNS) for row in rows)
        self.file.write(memoryview(body.cpu().numpy()))

    def _write(self, encoded: tuple[tuple[int, ...], list[np.ndarray]]) -> None:
        entry, planes = encoded
        self.entries.append(entry)
        for plane in planes:
            self.file.write(memoryview(plane))

    def finish(self) -> tuple[bytes | Path, ...]:
        try:
            while self.pending:
                self._write(self.pending.popleft().result())
        finally:
            self.close()
        if len(self.entries) != len(self.lengths):
            raise ValueError(f"golomb stream: {len(self.entries)} of {len(self.lengths)} chunks given")
        table = np.zeros(len(self.entries), dtype=TABLE_DTYPE)
        for name, col in zip(TABLE_COLUMNS, zip(*self.entries), strict=False):
            table[name] = col
        return header_bytes(self.d, table), self.path

    def close(self) -> None:
        """Stop the pool (chunks in flight are dropped) and close the spill file; finish calls it."""
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        self.file.close()


class GolombCodec(Codec):
    """Near-entropy sparse ternary code, adaptive per chunk, chunks independently decodable."""

    id = "golomb"

    def encode(self, signs: torch.Tensor, segments: Sequence[int] = ()) -> torch.Tensor:
        """The payload (CPU uint8): numpy per chunk in threads on the CPU, one vectorized pass on a GPU."""
        if signs.device.type == "cpu":
            return numpy_backend.encode(signs, segments)
        from compeft.codecs.golomb import torch_backend

        return torch_backend.encode(signs, segments)

    def stream_encoder(self, d: int, segments: Sequence[int], spill: Path, threads: int | None = None) -> GolombStreamEncoder:
        """Chunk by chunk (numpy, ``threads`` chunks at a time: torch's thread count by default), bodies spilled to a
        file: the same payload as ``encode``."""
        return GolombStreamEncoder(d, segments, spill, threads or torch.get_num_threads())

    def decode_span(self, plan: GolombPlan, payload: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """τ[start:stop] as int8 from the chunks that cover it (numpy, one chunk at a time)."""
        table = plan.table
        first = int(np.searchsorted(table.start, start, side="right")) - 1
        last = int(np.searchsorted(table.start, stop, side="left"))
        a, b = int(table.start[max(first, 0)]), int(table.start[last - 1] + table.length[last - 1]) if last else 0
        check_allocation(max(b - a, 0), f"decoding entries {a:,}..{b:,}")
        out = np.zeros(max(b - a, 0), dtype=np.int8)
        buf = payload.reshape(-1).numpy()
        values = np.array([-1, 0, 1], dtype=np.int8)
        for i in range(max(first, 0), last):
            s = int(table.start[i]) - a
            numpy_backend.decode_chunk_np(table, i, buf, out[s : s + int(table.length[i])], values)
        return torch.from_numpy(out[start - a : stop - a])

    def span_plan(self, plan: GolombPlan, start: int, stop: int) -> tuple[GolombPlan, int, int]:
        """The plan of the chunks that exactly cover τ[start:stop] (both on chunk boundaries: tensor boundaries are)
        and the byte range of their bodies: decode_into(sub, payload[a:b], out) writes that span alone."""
        t = plan.table
        i, j = (int(np.searchsorted(t.start, x)) for x in (start, stop))
        end = int(t.start[j]) if j < len(t) else int(t.start[-1] + t.length[-1]) if len(t) else 0
        if i >= len(t) or int(t.start[i]) != start or end != stop:
            raise ValueError(f"span [{start}, {stop}) does not start and end on golomb chunk boundaries")
        sub = ChunkTable(t.length[i:j], t.count[i:j], t.m[i:j], t.mode[i:j], t.unary_bytes[i:j], t.extra_bits[i:j], 0)
        a = int(t.unary_off[i])
        return GolombPlan(sub, np.flatnonzero(sub.mode == 0), np.flatnonzero(sub.mode == 1)), a, a + sub.end

    def in_place(self, plan: GolombPlan, payload: torch.Tensor, spans: Sequence[tuple[int, int, torch.dtype]],
                 values: torch.Tensor, device: torch.device):
        """A triton_apply.InPlace adding s·t (``values``: −s, 0, s in float32) straight into the weights of
        ``spans`` (τ offset, entries, dtype) at the decoded positions, or None without Triton."""
        if not triton_available():
            return None
        from compeft.codecs.golomb.triton_apply import KINDS, InPlace

        if any(dtype not in KINDS for _, _, dtype in spans):
            raise ValueError(f"in-place apply handles {sorted(map(str, KINDS))} weights only")
        return InPlace(plan, payload, list(spans), values, device)

    def prepare(self, payload: torch.Tensor, d: int) -> GolombPlan:
        """Parse and check the header and chunk table against the payload size and d (no decoding)."""
        table = read_table(payload, d)
        return GolombPlan(table, np.flatnonzero(table.mode == 0), np.flatnonzero(table.mode == 1))

    def decode_into(self, plan: GolombPlan, payload: torch.Tensor, out: torch.Tensor, values: torch.Tensor, *,
                    staged: StagedPayload | None = None, backend: str | None = None) -> Callable[[], None]:
        """Write τ mapped through ``values`` into ``out``; the returned ``finish()`` waits for the device and
        raises CodecError on a bad payload. ``backend`` (numpy, torch, triton) defaults to numpy on the CPU and
        Triton on CUDA (torch where Triton is missing)."""
        device = out.device
        if backend is None:
            backend = "numpy" if device.type == "cpu" else "triton" if triton_available() else "torch"
        if backend == "numpy":
            numpy_backend.decode_into(plan.table, payload, out, values)
            return _done
        table, ids = plan.table, plan.mode0
        host_values = values.cpu()
        triton = bool(ids.size) and backend == "triton"
        if triton:
            from compeft.codecs.golomb.triton_backend import (
                Plan,
                decode_mode0,
                raise_errors,
            )
        earlier = plan.cached_columns(device, host_values) if triton else None
        # a plan made earlier goes up before the payload: both copies queue on one copy engine, and the first
        # decode pass needs both
        device_plan = Plan(earlier, device) if earlier is not None else None
        if staged is None and device.type == "cuda":
            staged = StagedPayload(payload, device)  # the main stream fills the output meanwhile
        zero = host_values[1].item()  # a host scalar: the vectorized fill, exact
        main = torch.cuda.current_stream(device) if staged is not None else None
        filled = None
        if triton and staged is not None:
            # on a stream of its own, beside the first decode passes: only the last one needs θ_init in place
            fill = side_stream(device, "fill")
            fill.wait_stream(main)
            with torch.cuda.stream(fill):
                out.fill_(zero)
            out.record_stream(fill)
            filled = torch.cuda.Event()
            filled.record(fill)
        else:
            out.fill_(zero)  # queued before the plan: the device fills while the host plans
        if triton and device_plan is None:
            device_plan = Plan(plan.columns(device, host_values), device)  # one asynchronous upload
        if device_plan is not None:
            values = device_plan.values
        elif values.device.type == "cpu" and device.type == "cuda":
            values = values.pin_memory().to(device, non_blocking=True)  # a pageable copy would wait for the device
        elif values.device != device:
            values = values.to(device)
        if staged is not None:
            buf = staged.buf
            if not triton or plan.mode1.size:
                staged.wait_all(main)
                if filled is not None:
                    main.wait_event(filled)
        else:
            buf = padded_buffer(payload, device)
        for i in plan.mode1.tolist():  # rare (more than half non-zero): decoded on the host
            s = int(table.start[i])
            out[s : s + int(table.length[i])].copy_(numpy_backend.decode_chunk_host(table, i, payload, host_values))
        if triton:
            decode_mode0(device_plan, buf, out, staged, filled)
            if staged is not None:
                staged.wait_all(main)
            errors = device_plan.errors
            return lambda: raise_errors(errors.cpu().numpy())  # waits for the device
        if ids.size:
            from compeft.codecs.golomb import torch_backend

            torch_backend.decode_mode0(table, ids, buf, out, values)
        return _done
