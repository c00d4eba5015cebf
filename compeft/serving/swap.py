"""``hotswap``: replace a live peft adapter by a compressed artifact of the same structure, in place.

The first swap into an adapter binds it (``slot.Slot``: its delta parameters become views of one flat buffer,
values kept); every swap after that is one decode into that buffer. Bind before ``torch.compile`` (swap once,
or create the ``AdapterPool``) so that the compiled graph sees the bound parameters; same-shaped swaps then
never recompile (different ranks or alphas need peft's ``prepare_model_for_compiled_hotswap`` first, as with
peft's own hotswap).
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

from compeft.errors import InputError
from compeft.fastload import ResidentArtifact
from compeft.serving.slot import Slot, peft_model_of

_slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # PeftModel → {adapter name: Slot}
_slots_lock = threading.Lock()


def slot_of(model: Any, adapter_name: str, reference: Any = None) -> Slot:
    """The model's one ``Slot`` for ``adapter_name`` (bound on first use, shared by hotswap and pools)."""
    peft = peft_model_of(model)
    with _slots_lock:
        slots = _slots.setdefault(peft, {})
        slot = slots.get(adapter_name)
        if slot is None:
            slot = slots[adapter_name] = Slot(peft, adapter_name, reference)
    return slot


def resident(source: Any) -> ResidentArtifact:
    """A ``ResidentArtifact`` as given, or one read from an artifact directory (or its container file)."""
    if isinstance(source, ResidentArtifact):
        return source
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise InputError(f"{source}: no such artifact directory (addresses such as s3://…, hf://… or registry "
                             "ids are resolved by storage.serving.ArtifactResolver)")
        return ResidentArtifact.open(path)
    raise InputError(f"an artifact source is a directory or a ResidentArtifact, not {type(source).__name__}")


def hotswap(model: Any, source: Any, adapter_name: str = "default") -> None:
    """Replace the live adapter ``adapter_name`` of ``model`` (a ``PeftModel``, compiled or not) by the adapter
    of ``source`` (an artifact directory or a ``ResidentArtifact``). Afterwards the model computes exactly what
    ``PeftModel.from_pretrained(base, decompressed_dir)`` computes. A structure mismatch raises
    ``AdapterMismatchError`` and leaves the live adapter untouched."""
    slot_of(model, adapter_name).write(resident(source))
