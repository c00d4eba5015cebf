"""``BaseModelSession``: one base model loaded once on a device, calibrating many adapters in turn.

Each adapter is attached to the loaded base, swept and detached again (``unload`` without merging),
so the base stays pristine between adapters. Should an adapter leave anything behind (PEFT modules
that could not be removed, a base tensor replaced, resized or counted by PyTorch as written in
place), the base is dropped and loaded afresh for the next adapter. Full fine-tunes load their own
model and do not use the session's base.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from compeft.calibrate import model as model_mod
from compeft.calibrate.model import LoadedBase, LoadedModel
from compeft.devices import resolve_device
from compeft.errors import OptionError

log = logging.getLogger("compeft.calibrate")


def _fingerprint(model: Any) -> dict[str, tuple]:
    """Identity of every parameter and buffer: object, storage, in-place write counter, shape, dtype, device."""
    tensors = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    return {name: (id(t), t.data_ptr(), t._version, tuple(t.shape), t.dtype, t.device) for name, t in tensors}


class BaseModelSession:
    """A base model (and tokenizer) loaded once for a device; adapters are attached, calibrated and detached.

    Use as a context manager (or call ``close``) to free the model's memory when the batch is done.
    """

    def __init__(self, base: str | Path, device: str | torch.device = "auto") -> None:
        self.base = str(base)
        self.ref = model_mod.resolve_base(self.base)  # a missing base directory fails here, before any load
        self.device = resolve_device(device)
        self.loads = 0  # how many times the base was loaded (1 unless an adapter spoiled it)
        self._base: LoadedBase | None = None
        self._fingerprint: dict[str, tuple] = {}
        self._requires_grad: dict[str, bool] = {}

    def __enter__(self) -> BaseModelSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BaseModelSession({self.ref!r}, device={str(self.device)!r}, loaded={self._base is not None})"

    @property
    def loaded(self) -> bool:
        """Whether the base model is in memory now."""
        return self._base is not None

    def loaded_base(self) -> LoadedBase:
        """The loaded base, loading it on first use."""
        if self._base is None:
            self._base = model_mod.load_base(self.ref, self.device)
            self.loads += 1
            self._fingerprint = _fingerprint(self._base.model)
            self._requires_grad = {n: p.requires_grad for n, p in self._base.model.named_parameters()}
        return self._base

    @contextmanager
    def attached(self, src: str | Path) -> Iterator[LoadedModel]:
        """The PEFT adapter at SRC on the shared base for the duration of the block; detached afterwards."""
        base = self.loaded_base()
        loaded = None
        try:
            loaded = model_mod.attach_adapter(base, Path(src))
            yield loaded
        finally:
            left = model_mod.detach_adapter(base.model, loaded.peft if loaded is not None else None)
            self._restore(base, left, src)

    def _restore(self, base: LoadedBase, left: tuple[str, ...], src: str | Path) -> None:
        """Undo PEFT's requires_grad changes; drop the base if the adapter left anything else behind."""
        for name, param in base.model.named_parameters():
            param.requires_grad_(self._requires_grad.get(name, param.requires_grad))
        if left or _fingerprint(base.model) != self._fingerprint:
            what = f"PEFT modules {', '.join(left[:3])}" if left else "changed base tensors"
            log.warning("%s left %s in the base model; loading the base again for the next adapter", src, what)
            self.close()

    def close(self) -> None:
        """Drop the loaded base and return its memory to the device (a later adapter loads it again)."""
        if self._base is None:
            return
        self._base = None
        self._fingerprint, self._requires_grad = {}, {}
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def check_session(session: BaseModelSession, base: str | Path, device: str) -> None:
    """The session must hold the base and device the call names (device "auto" means the session's)."""
    if model_mod.resolve_base(str(base)) != session.ref:
        raise OptionError(f"--base {base} is not the session's base model {session.ref}")
    if str(device).strip().lower() != "auto" and resolve_device(device) != session.device:
        raise OptionError(f"--device {device} is not the session's device {session.device}")
