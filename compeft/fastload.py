"""Fast load: container bytes already in (pinned) host memory → reconstructed tensors on a device.

``load_bytes`` parses a compeft.safetensors image held in memory (no file read, no copy of the payload)
and decodes straight into the output dtype (``artifact.decode_deltas``): the payload's copy to a GPU
starts while the document is still being parsed, and the records are checked while the device decodes.
``ResidentArtifact`` parses and checks once and loads many times (serving). The values are
bit-identical to every other decode path's.
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from compeft.artifact import ViewPlan, adapter_config_bytes, decode_deltas, single_kind
from compeft.codecs import get_codec
from compeft.codecs.staging import StagedPayload
from compeft.container import (
    container_path,
    named_payload_errors,
    parse_container,
    read_bytes,
)
from compeft.devices import resolve_device
from compeft.document import check
from compeft.errors import InputError


class Prefetch:
    """Starts the payload's copy to a CUDA device (on a side stream) while the document is still being parsed."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.staged = device, None

    def __call__(self, payload: torch.Tensor) -> None:
        self.staged = StagedPayload(payload, self.device)


_gc_lock = threading.Lock()
_gc_pausers = 0
_gc_was_enabled = False


@contextmanager
def paused_gc():
    """Pause the cyclic garbage collector for the block, across threads (the last one out restores it): a load
    makes thousands of small objects and no cycles, and a collection triggered midway costs milliseconds."""
    global _gc_pausers, _gc_was_enabled
    with _gc_lock:
        if _gc_pausers == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pausers += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pausers -= 1
            if _gc_pausers == 0 and _gc_was_enabled:
                gc.enable()


def _refuse_full(container) -> None:
    if container.doc.get("kind") == "full":
        raise InputError(f"{container.path}: holds a full fine-tune residual; use decompress with --base")


def load_bytes(data: torch.Tensor, device: str | torch.device = "cpu", *, verify: bool = True, label: str = "<memory>",
               pause_gc: bool = False) -> dict[str, torch.Tensor]:
    """api.load for a container image already in host memory (pin it for the fastest copy to a GPU);
    ``pause_gc`` pauses the garbage collector during the load."""
    dev = resolve_device(device)
    with paused_gc() if pause_gc else nullcontext(), torch.no_grad():  # no autograd bookkeeping on ~1000 views
        prefetched = Prefetch(dev) if dev.type == "cuda" else None
        container = parse_container(data, Path(label), verify=verify, prefetch=prefetched)
        _refuse_full(container)
        tensors = decode_deltas(container, dev, staged=prefetched.staged if prefetched else None)
        tensors.update({n: t.to(dev, non_blocking=True) for n, t in container.carried.items()})
    return tensors


class ResidentArtifact:
    """A compressed artifact kept in host memory and checked once, to be loaded onto a device many times.

    For serving many adapters: hold each one's compressed bytes in page-locked memory and call load()
    whenever it is swapped onto a GPU. The container, document, codec plan (the golomb chunk table and,
    per device, its Triton plan) and view layout are parsed and checked here, once; each load() copies the
    payload, decodes it on the device with every payload check, and returns fresh tensors equal to
    load_bytes'. ``data`` must not change after. ``adapter_config`` is the adapter's adapter_config.json
    (what serving needs besides the tensors: ranks, alphas, options); ``open`` reads it from the directory.
    """

    def __init__(self, data: torch.Tensor, *, verify: bool = True, label: str = "<memory>",
                 adapter_config: bytes | None = None) -> None:
        self.container = parse_container(data, Path(label), verify=verify)
        _refuse_full(self.container)
        self.adapter_config = adapter_config
        self.checked = check(self.container)
        document, columns = self.checked
        self.view_plan = ViewPlan(columns)
        self.plan = None
        if single_kind(columns.dtypes, columns.theta_inits) is not None:
            with named_payload_errors(self.container.path):
                self.plan = get_codec(document.codec).prepare(self.container.payload, document.d)

    @classmethod
    def open(cls, path: str | Path, *, verify: bool = True) -> ResidentArtifact:
        """Read an artifact into page-locked memory (when CUDA is present) and check it, with the
        adapter_config.json beside it when there is one (checked against the hash the document records)."""
        path = container_path(path)
        resident = cls(read_bytes(path, pin=torch.cuda.is_available()), verify=verify, label=str(path))
        resident.adapter_config = adapter_config_bytes(path, resident.checked[0].source, required=False)
        return resident

    @property
    def nbytes(self) -> int:
        """Host memory held: the container image and the adapter config."""
        return self.container.file_bytes + len(self.adapter_config or b"")

    def load(self, device: str | torch.device = "cpu", *, pause_gc: bool = False) -> dict[str, torch.Tensor]:
        """The reconstructed state dict on ``device`` (what load_bytes returns for these bytes)."""
        dev = resolve_device(device)
        with paused_gc() if pause_gc else nullcontext(), torch.no_grad():
            tensors = decode_deltas(self.container, dev, checked=self.checked, plan=self.plan, views=self.view_plan)
            tensors.update({n: t.to(dev, non_blocking=True) for n, t in self.container.carried.items()})
        return tensors


def load_fast(path: str | Path, device: str | torch.device = "cpu", *, verify: bool = True) -> dict[str, torch.Tensor]:
    """api.load through the fast path: file → pinned memory → fused decode on ``device``."""
    path = container_path(path)
    return load_bytes(read_bytes(path, pin=True), device, verify=verify, label=str(path))
