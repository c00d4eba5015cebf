"""Fast load: container bytes already in (pinned) host memory → reconstructed tensors on a device.

``load_bytes`` parses a compeft.safetensors image held in memory (no file read, no copy of the
payload), and decodes straight into the output dtype: when every delta tensor shares one dtype and
θ_init (every LoRA adapter), the codec writes θ_init + s·t into one flat tensor of that dtype and the
state dict holds views into it, so no int8 τ or float32 intermediate is ever made. The values are
bit-identical to api.load's (same float32 arithmetic, then one cast).
"""

from __future__ import annotations

import gc
import itertools
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from compeft.adapters import DTYPES_BY_NAME
from compeft.codecs import get_codec
from compeft.codecs.golomb_fast import StagedPayload, decode_fast, read_table_fast
from compeft.container import Container, container_path, named_payload_errors, parse_container, read_bytes
from compeft.devices import resolve_device
from compeft.document import RecordColumns, check_document, check_records, record_kinds
from compeft.errors import ContainerError, InputError
from compeft.kernels import triton_available
from compeft.taskvector import DeltaRecord, reconstruct


def value_table(scale: float, theta_init: float, dtype: torch.dtype) -> torch.Tensor:
    """(θ_init − s, θ_init, θ_init + s) in ``dtype``, computed as taskvector.reconstruct_tensor does."""
    values = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float32) * torch.tensor(scale, dtype=torch.float32)
    if theta_init:
        values += theta_init
    return values.to(dtype)


def reconstruct_fast(
    container: Container, records: tuple[DeltaRecord, ...] | None, device: torch.device, prefetched: Prefetch | None = None
) -> dict[str, torch.Tensor]:
    """The delta tensors on ``device``; one fused decode when all records share dtype and θ_init.

    With ``records`` None the document is checked (check_records) while the device decodes."""
    doc = container.doc
    codec = get_codec(doc["codec"])
    kinds = record_kinds(container)
    (dtype_name, theta_init), = kinds if len(kinds) == 1 else ((None, None),)
    dtype = DTYPES_BY_NAME.get(dtype_name)
    d = doc.get("d")
    if dtype is not None and theta_init is not None and isinstance(d, int) and hasattr(codec, "decode_values_deferred"):
        values = value_table(float(doc["scale"]), theta_init, dtype)
        if prefetched is not None and prefetched.staged is not None and codec.id == "golomb":
            # golomb's decode_values_deferred on a device, with the payload copy already under way
            pending: list = []
            flat = decode_fast(container.payload, d, device, values, staged=prefetched.staged, deferred=pending)
            finish = lambda: [f() for f in pending] and None  # noqa: E731
        else:
            flat, finish = codec.decode_values_deferred(container.payload, d, device, values)
        try:
            cols = check_records(container) if records is None else RecordColumns.of(records)
        except BaseException:
            finish_quietly(finish)
            raise
        if set(zip(cols.dtypes, cols.theta_inits)) != {(dtype_name, theta_init)}:
            finish_quietly(finish)
            raise ContainerError(f"{container.path}: tensor records changed between reads")
        tensors = views_of(flat, cols)
        finish()
        return tensors
    if records is None:
        records = check_document(container)
    ternary = codec.decode(container.payload, doc["d"], device)
    return reconstruct(records, ternary, doc["scale"])


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides of ``shape`` (a size-0 dimension counts as 1, as torch does)."""
    acc, rev = 1, []
    for size in reversed(shape):
        rev.append(acc)
        acc *= max(size, 1)
    return tuple(reversed(rev))


def layout_period(shapes: tuple[tuple[int, ...], ...], offsets: tuple[int, ...], tries: int = 16) -> int | None:
    """The smallest P (among a few candidates) with shape[i+P] = shape[i] and a constant offset[i+P] − offset[i]
    for every i: the layer period of a model's adapter (14 records per layer for an all-linear LoRA)."""
    n = len(shapes)
    if n < 2:
        return None
    first_seen: dict[tuple[int, ...], int] = {}
    group = np.fromiter(map(first_seen.setdefault, shapes, itertools.count()), np.int64, n)
    if len(first_seen) == n:
        return None
    off = np.asarray(offsets, dtype=np.int64)
    for p in (np.flatnonzero(group[1 : n // 2 + 1] == group[0])[:tries] + 1).tolist():
        if (group[p:] == group[:-p]).all() and (off[p:] - off[:-p] == off[p] - off[0]).all():
            return p
    return None


class ViewPlan:
    """How the flat output is cut into the records' tensors, worked out once. With a layer period P, the
    records of each of the P places in a layer come from one as_strided + unbind (P calls, not ~1000)."""

    def __init__(self, cols: RecordColumns) -> None:
        n, shapes, offsets = len(cols.names), cols.shapes, cols.offsets
        strides: dict[tuple[int, ...], tuple[int, ...]] = {}

        def stride_of(shape: tuple[int, ...]) -> tuple[int, ...]:
            return strides.get(shape) or strides.setdefault(shape, contiguous_strides(shape))

        self.names = cols.names
        self.lanes: list[tuple[tuple[int, ...], tuple[int, ...], int]] = []
        done = 0
        period = layout_period(shapes, offsets)
        if period is not None:
            reps, step = n // period, offsets[period] - offsets[0]
            self.lanes = [((reps, *shapes[j]), (step, *stride_of(shapes[j])), offsets[j]) for j in range(period)]
            done = reps * period
        self.rest = [(shapes[i], stride_of(shapes[i]), offsets[i]) for i in range(done, n)]

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each record's tensor as a view into ``flat``, in record order."""
        base = flat.storage_offset()
        lanes = [flat.as_strided(size, stride, base + offset).unbind(0) for size, stride, offset in self.lanes]
        views = list(itertools.chain.from_iterable(zip(*lanes)))
        views += [flat.as_strided(shape, stride, base + offset) for shape, stride, offset in self.rest]
        return dict(zip(self.names, views))


def views_of(flat: torch.Tensor, cols: RecordColumns) -> dict[str, torch.Tensor]:
    """Each record's tensor as a view into the flat output, in record order."""
    return ViewPlan(cols).views(flat)


class Prefetch:
    """Starts the payload's copy to a CUDA device (on a side stream) while the document is still being parsed."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.staged = device, None

    def __call__(self, payload: torch.Tensor) -> None:
        self.staged = StagedPayload(payload, self.device)


def finish_quietly(finish) -> None:
    """Wait for a deferred decode whose result is being discarded, ignoring its payload errors."""
    try:
        finish()
    except InputError:
        pass


def load_bytes(data: torch.Tensor, device: str | torch.device = "cpu", *, verify: bool = True, label: str = "<memory>") -> dict[str, torch.Tensor]:
    """api.load for a container image already in host memory (pin it for the fastest copy to a GPU)."""
    dev = resolve_device(device)
    with no_gc(), torch.no_grad():  # no autograd bookkeeping on ~1000 views (they behave the same)
        prefetched = Prefetch(dev) if dev.type == "cuda" else None
        container = parse_container(data, Path(label), verify=verify, prefetch=prefetched)
        if container.doc.get("kind") == "full":
            raise InputError(f"{container.path}: holds a full fine-tune residual; use decompress with --base")
        with named_payload_errors(container.path):
            tensors = reconstruct_fast(container, None, dev, prefetched)  # checks the document while the device decodes
        tensors.update({n: t.to(dev, non_blocking=True) for n, t in container.carried.items()})
    return tensors


class ResidentArtifact:
    """A compressed artifact kept in host memory and checked once, to be loaded onto a device many times.

    For serving many adapters: hold each one's compressed bytes in page-locked memory and call load()
    whenever it is swapped onto a GPU. The container, document, chunk table, decode plan and view layout
    are parsed and checked here, once; each load() copies the payload, decodes it on the device with
    every payload check, and returns fresh tensors equal to load_bytes'. ``data`` must not change after.
    """

    def __init__(self, data: torch.Tensor, *, verify: bool = True, label: str = "<memory>") -> None:
        self.container = parse_container(data, Path(label), verify=verify)
        doc, path = self.container.doc, self.container.path
        if doc.get("kind") == "full":
            raise InputError(f"{path}: holds a full fine-tune residual; use decompress with --base")
        self.columns = check_records(self.container)
        self.view_plan = ViewPlan(self.columns)
        codec = get_codec(doc["codec"])
        kinds = set(zip(self.columns.dtypes, self.columns.theta_inits))
        self.values = self.table = None
        self._plans: dict[torch.device, object] = {}
        if len(kinds) == 1 and codec.id == "golomb":
            dtype_name, theta_init = next(iter(kinds))
            self.values = value_table(float(doc["scale"]), theta_init, DTYPES_BY_NAME[dtype_name])
            with named_payload_errors(path):
                self.table = read_table_fast(self.container.payload, doc["d"])

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> ResidentArtifact:
        """Read an artifact into page-locked memory (when CUDA is present) and check it."""
        path = container_path(path)
        return cls(read_bytes(path, pin=torch.cuda.is_available()), verify=verify, label=str(path))

    def load(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The reconstructed state dict on ``device`` (what load_bytes returns for these bytes)."""
        dev = resolve_device(device)
        container = self.container
        with no_gc(), torch.no_grad(), named_payload_errors(container.path):
            if self.table is None:
                tensors = reconstruct_fast(container, self.columns.records(), dev)
            elif dev.type == "cpu":  # the threaded numpy decoder, as load_bytes uses
                tensors = self.view_plan.views(get_codec("golomb").decode_values(container.payload, container.doc["d"], dev, self.values))
            else:
                pending: list = []
                flat = decode_fast(container.payload, container.doc["d"], dev, self.values, table=self.table, deferred=pending,
                                   plan_columns=self._plan(dev))
                tensors = self.view_plan.views(flat)
                for check in pending:  # waits for the device; raises CodecError on a bad payload
                    check()
            tensors.update({n: t.to(dev, non_blocking=True) for n, t in container.carried.items()})
        return tensors

    def _plan(self, device: torch.device):
        """The Triton decode plan for ``device`` (made on first use), or None where the Triton decoder is not used."""
        if device.type != "cuda" or not triton_available():
            return None
        if device not in self._plans:  # None (no mode-0 chunks) is kept too
            from compeft.kernels.golomb_triton import plan_columns

            ids = np.flatnonzero(self.table.mode == 0)
            self._plans[device] = plan_columns(self.table, ids, device, self.values) if ids.size else None
        return self._plans[device]


@contextmanager
def no_gc():
    """Pause the cyclic garbage collector: a load makes thousands of small objects and no cycles, and a
    collection triggered midway costs milliseconds (the reference counts still free everything)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_fast(path: str | Path, device: str | torch.device = "cpu", *, verify: bool = True) -> dict[str, torch.Tensor]:
    """api.load through the fast path: file → pinned memory → fused decode on ``device``."""
    path = container_path(path)
    return load_bytes(read_bytes(path, pin=True), device, verify=verify, label=str(path))
