"""``AdapterPool``: many compressed experts held in (pinned) host memory, a few decoded into GPU slots.

Two tiers, each least-recently-used: the host tier holds every added adapter's compressed artifact (checked once,
``ResidentArtifact``) up to ``host_budget_bytes``; the device tier is ``gpu_slots`` peft adapters of the live model
(the model's active adapter plus ``gpu_slots − 1`` added beside it), each bound as a ``Slot`` so that activating
an adapter that is not on the device is one decode into the least recently used slot. An adapter whose host copy
was evicted is fetched again from its source on its next activation; adapters added as in-memory
``ResidentArtifact``s cannot be fetched again and are never evicted from the host.

One lock guards the pool's state; ``add`` reads and checks its artifact before taking it, so a serving thread
activating adapters waits only for the bookkeeping of another thread's ``add``.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from compeft.errors import InputError, OptionError, PoolError
from compeft.fastload import ResidentArtifact
from compeft.serving.slot import Slot, peft_model_of
from compeft.serving.swap import resident, slot_of

Resolver = Callable[[str], ResidentArtifact]


@dataclass
class _Entry:
    """One added adapter: where it came from (None when it cannot be fetched again) and its host copy."""

    source: Any
    artifact: ResidentArtifact | None
    nbytes: int


class AdapterPool:
    """Serve many adapters of one structure from their compressed form (see the module docstring).

    ``model`` is a peft ``PeftModel`` (compiled or not) whose active adapter is the template: every adapter added
    must have its structure (family, target modules, ranks, options). ``device`` must be the adapter's device
    when given. ``resolver`` turns an address (``s3://…``, ``hf://…``, ``registry:ID``) into a
    ``ResidentArtifact`` (``storage.serving.ArtifactResolver``); without it, a source is a directory or a
    ``ResidentArtifact``.
    """

    def __init__(self, model: Any, *, gpu_slots: int = 1, host_budget_bytes: int | None = None,
                 device: str | torch.device | None = None, resolver: Resolver | None = None) -> None:
        if type(gpu_slots) is not int or gpu_slots < 1:
            raise OptionError(f"gpu_slots must be a positive integer, got {gpu_slots!r}", "gpu_slots")
        if host_budget_bytes is not None and (type(host_budget_bytes) is not int or host_budget_bytes < 0):
            raise OptionError(f"host_budget_bytes must be a non-negative integer, got {host_budget_bytes!r}",
                              "host_budget_bytes")
        self.model = model
        self.peft = peft_model_of(model)
        template = self.peft.active_adapter
        if not isinstance(template, str):
            raise InputError(f"the model has several active adapters ({template}); activate one to serve from")
        first = slot_of(self.peft, template)
        reference = first.reference
        self.slots: list[Slot] = [first]
        for i in range(1, gpu_slots):
            name = f"{template}_compeft_slot{i}"
            if name not in self.peft.peft_config:
                config = copy.deepcopy(reference)
                if hasattr(config, "init_lora_weights"):
                    config.init_lora_weights = False  # never rewrite base weights for a slot (its values are replaced)
                self.peft.add_adapter(name, config)
            self.slots.append(slot_of(self.peft, name, reference))
        if device is not None and first.device is not None and torch.device(device) != first.device:
            raise OptionError(f"device {device} differs from the adapter's device {first.device}", "device")
        self.device = first.device
        self.host_budget_bytes = host_budget_bytes
        self.resolver = resolver
        self._lock = threading.RLock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # host tier, least recently used first
        self._holds: list[str | None] = [None] * gpu_slots  # which adapter each slot holds
        self._slot_order: OrderedDict[int, None] = OrderedDict((i, None) for i in range(gpu_slots))  # LRU first
        self._active_slot = 0
        self.active: str | None = None
        self._counts = dict.fromkeys(("hits", "misses", "evictions", "host_evictions", "refetches"), 0)

    # -- sources -----------------------------------------------------------------------------------------------
    def _open(self, source: Any) -> tuple[ResidentArtifact, Any]:
        """The artifact of ``source`` and what to fetch it again from (None: it cannot be fetched again)."""
        if isinstance(source, ResidentArtifact):
            return source, None
        if isinstance(source, (str, Path)) and Path(source).exists():
            return resident(source), Path(source)
        if isinstance(source, str) and self.resolver is not None:
            artifact = self.resolver(source)
            if not isinstance(artifact, ResidentArtifact):
                raise InputError(f"{source}: the resolver returned {type(artifact).__name__}, not a ResidentArtifact")
            return artifact, source
        return resident(source), None  # raises its one-line error

    # -- the public calls --------------------------------------------------------------------------------------
    def add(self, name: str, source: Any) -> None:
        """Fetch, verify and hold ``source``'s artifact in host memory under ``name`` (nothing is decoded).
        Raises AdapterMismatchError when it does not fit the pool's adapters, PoolError when ``name`` is taken
        or the host budget cannot hold it."""
        if not isinstance(name, str) or not name:
            raise InputError(f"an adapter name is a non-empty string, not {name!r}")
        artifact, refetch = self._open(source)
        self.slots[0].check(artifact)
        with self._lock:
            if name in self._entries:
                raise PoolError(f"adapter {name!r} is already in the pool; remove it first")
            self._entries[name] = _Entry(refetch, artifact, artifact.nbytes)
            try:
                self._fit_budget(keep=name)
            except PoolError:
                del self._entries[name]
                raise

    def activate(self, name: str) -> None:
        """Make ``name`` the model's active adapter: a hit when a slot holds it, else one decode into the least
        recently used slot. Returns when the model is ready for its next forward."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                raise PoolError(f"no adapter {name!r} in the pool")
            self._entries.move_to_end(name)
            if name in self._holds:
                index = self._holds.index(name)
                self._counts["hits"] += 1
            else:
                self._counts["misses"] += 1
                if entry.artifact is None:
                    entry.artifact, _ = self._open(entry.source)
                    entry.nbytes = entry.artifact.nbytes
                    self._counts["refetches"] += 1
                    self._fit_budget(keep=name)
                index = next((i for i in self._slot_order if self._holds[i] is None), next(iter(self._slot_order)))
                if self._holds[index] is not None:
                    self._counts["evictions"] += 1
                self._holds[index] = None  # until the decode has finished
                self.slots[index].write(entry.artifact)
                self._holds[index] = name
            self._slot_order.move_to_end(index)
            if index != self._active_slot or self.peft.active_adapter != self.slots[index].name:
                self.peft.set_adapter(self.slots[index].name, inference_mode=True)
                self._active_slot = index
            self.active = name

    def remove(self, name: str) -> None:
        """Forget ``name`` (its host copy and its slot). The active adapter cannot be removed."""
        with self._lock:
            if name not in self._entries:
                raise PoolError(f"no adapter {name!r} in the pool")
            if name == self.active:
                raise PoolError(f"adapter {name!r} is active; activate another before removing it")
            del self._entries[name]
            if name in self._holds:
                self._holds[self._holds.index(name)] = None

    def stats(self) -> dict[str, Any]:
        """Resident adapters (host LRU order, oldest first), known adapters, slots, counters and host bytes."""
        with self._lock:
            return {
                "resident": [n for n, e in self._entries.items() if e.artifact is not None],
                "known": list(self._entries),
                "active": self.active,
                "slots": [{"adapter_name": s.name, "holds": h} for s, h in zip(self.slots, self._holds)],
                **self._counts,
                "bytes_held": self._bytes_held(),
                "host_budget_bytes": self.host_budget_bytes,
            }

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    # -- the host budget ---------------------------------------------------------------------------------------
    def _bytes_held(self) -> int:
        return sum(e.nbytes for e in self._entries.values() if e.artifact is not None)

    def _fit_budget(self, keep: str) -> None:
        """Drop host copies, least recently used first, until the budget holds (never ``keep``, the active
        adapter, or one that cannot be fetched again)."""
        if self.host_budget_bytes is None:
            return
        held = self._bytes_held()
        for name, entry in list(self._entries.items()):
            if held <= self.host_budget_bytes:
                return
            if name in (keep, self.active) or entry.artifact is None or entry.source is None:
                continue
            entry.artifact = None
            held -= entry.nbytes
            self._counts["host_evictions"] += 1
        if held > self.host_budget_bytes:
            raise PoolError(f"host budget {self.host_budget_bytes:,} bytes cannot hold adapter {keep!r} "
                            f"({held:,} bytes needed by adapters that must stay)")
