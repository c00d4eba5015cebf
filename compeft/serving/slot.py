"""A live peft adapter as a swap target: its delta parameters made views of one flat buffer.

A ``Slot`` is one named adapter of a ``PeftModel``. When it is made, the adapter's delta parameters (LoRA A/B,
(IA)³ vectors, ...) become views of one flat buffer laid out as compeft lays out τ (``taskvector.delta_records``:
saved keys sorted, consecutive offsets), so an artifact of the same structure decodes straight into them
through its value table: one decode, no per-tensor copy. Carried tensors (DoRA magnitudes, ``modules_to_save``
copies) are copied into their parameters. Saved keys map to live parameters through peft's own
``get_peft_model_state_dict`` fed the model's parameters, so every name peft saves is covered. Everything a swap
checks (family, tensor names and shapes, configuration) is checked before anything is written.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch

from compeft.adapters import parse_config
from compeft.artifact import ViewPlan, single_kind, value_table
from compeft.codecs import get_codec
from compeft.container import named_payload_errors
from compeft.document import RecordColumns
from compeft.dtypes import DTYPES_BY_NAME
from compeft.errors import AdapterMismatchError, InputError
from compeft.families import family_of, theta_inits
from compeft.fastload import ResidentArtifact
from compeft.taskvector import carried_names, delta_records

# Configuration fields a swapped-in adapter may change: what only describes the model or the run, what the tensor
# names and shapes already say (checked there), and what the swap carries over (ranks, alphas → scalings).
# Every other field changes what a layer computes and must be equal.
MAY_DIFFER = frozenset({
    "base_model_name_or_path", "revision", "inference_mode", "peft_version", "auto_mapping", "task_type",
    "runtime_config", "target_modules", "exclude_modules", "modules_to_save", "layers_to_transform", "layers_pattern",
})
FAMILY_MAY_DIFFER = {
    "LORA": frozenset({"r", "lora_alpha", "rank_pattern", "alpha_pattern", "use_rslora", "lora_dropout",
                       "init_lora_weights", "loftq_config", "eva_config", "corda_config"}),
    "IA3": frozenset({"init_ia3_weights"}),
}
SERVED = ("LORA", "IA3")  # the families whose swaps are checked against peft's own load (DoRA is LoRA)
# LoRA initialisations that leave the base weights alone (the loaded tensors overwrite what they drew); the others
# (PiSSA, OLoRA, CorDA, LoftQ, MiCA, ...) rewrite base weights or freeze factors, so they must agree.
BASE_PRESERVING_INITS = (True, False, "gaussian", "eva", "orthogonal")

_watched: weakref.WeakSet = weakref.WeakSet()  # the tuner layers of bound adapters and everything inside them
_generation = itertools.count(1)
_structure_changes = [0]


def _structure_changed(module: torch.nn.Module, *_args) -> None:
    """A module or parameter was registered inside a bound adapter's layers (peft's
    ``prepare_model_for_compiled_hotswap`` replaces LoRA factors so): slots bind again before their next swap."""
    if not torch.compiler.is_compiling() and module in _watched:
        _structure_changes[0] = next(_generation)


torch.nn.modules.module.register_module_module_registration_hook(_structure_changed)
torch.nn.modules.module.register_module_parameter_registration_hook(_structure_changed)


def peft_model_of(model: Any):
    """The ``PeftModel`` itself (unwrapping ``torch.compile``), or an InputError."""
    from peft import PeftModel

    inner = getattr(model, "_orig_mod", model)
    if not isinstance(inner, PeftModel):
        raise InputError(f"serving swaps adapters of a peft PeftModel; got {type(model).__name__}")
    return inner


def live_adapter_tensors(peft_model, adapter_name: str) -> dict[str, torch.nn.Parameter]:
    """The adapter's parameters keyed by the names peft saves them under (no adapter name inside)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(peft_model, state_dict=peft_model.state_dict(keep_vars=True),
                                     adapter_name=adapter_name, save_embedding_layers=False)


def _plain(value: Any) -> Any:
    """A config value in a form that compares by content (sets sorted, enums by value)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(map(_plain, value), key=repr)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Fit:
    """What swapping in an adapter with one configuration sets besides the tensors: the config and, per LoRA
    layer of the slot, (r, alpha, use_rslora, scaling) as peft computes them when it attaches the adapter."""

    config: Any
    layers: tuple[tuple[int, float, bool, float], ...]


class Slot:
    """One adapter of a live ``PeftModel``, bound for swaps (see the module docstring). ``reference`` is the
    configuration artifacts are checked against (default: the adapter's own)."""

    def __init__(self, model: Any, adapter_name: str, reference: Any = None) -> None:
        self.peft = peft_model_of(model)
        self.name = adapter_name
        if adapter_name not in self.peft.peft_config:
            raise InputError(f"the model has no adapter {adapter_name!r} (it has {', '.join(self.peft.peft_config)})")
        self.reference = reference if reference is not None else self.peft.peft_config[adapter_name]
        self.peft_type = _plain(self.reference.peft_type)
        if self.peft_type not in SERVED:
            raise InputError(f"adapter {adapter_name!r} is {self.peft_type}; serving swaps {', '.join(SERVED)} adapters")
        self.lock = threading.RLock()
        self._fits: dict[bytes, Fit] = {}
        self.bind()

    # -- binding ---------------------------------------------------------------------------------------------
    def bind(self) -> None:
        """Make the delta parameters views of one flat buffer (values kept) and note what a swap writes."""
        from peft.tuners.lora import LoraLayer

        live = live_adapter_tensors(self.peft, self.name)
        config = _plain(self.reference.to_dict())
        thetas = theta_inits(family_of(config).rule(config), live)  # as compress classifies the saved adapter
        records = delta_records(live, thetas)
        cols = RecordColumns.of(records)
        self.live = live
        self.names, self.shapes, self.offsets = cols.names, cols.shapes, cols.offsets
        self.d = records[-1].offset + records[-1].numel if records else 0
        self.carried = {n: live[n] for n in carried_names(live, thetas)}
        self.params = [live[n] for n in cols.names]
        devices = {t.device for t in live.values()}
        self.device = next(iter(devices)) if len(devices) == 1 else None
        self.flat = None
        if self.params and self.device is not None and len({p.dtype for p in self.params}) == 1 \
                and all(isinstance(p, torch.nn.Parameter) for p in self.params):
            flat = torch.empty(self.d, dtype=self.params[0].dtype, device=self.device)
            with torch.no_grad():
                for p, view in zip(self.params, ViewPlan(cols).views(flat).values()):
                    view.copy_(p)
                    p.data = view
            self.flat = flat
        self.ptrs = [p.data_ptr() for p in self.params]
        self.lora_layers = [(key, m) for key, m in self.peft.base_model.model.named_modules()
                            if isinstance(m, LoraLayer) and self.name in m.scaling]
        self.tensor_scalings = bool(self.lora_layers) and all(
            isinstance(m.scaling[self.name], torch.Tensor) for _, m in self.lora_layers)
        self.written: list[float | None] = [None] * len(self.lora_layers)  # last value filled into tensor scalings
        self.applied: tuple | None = None  # the per-layer settings last written (skipped when unchanged)
        self._values: dict[tuple, torch.Tensor] = {}
        self._fits.clear()
        from peft.tuners.tuners_utils import BaseTunerLayer
        from peft.utils.other import AuxiliaryTrainingWrapper

        for module in self.peft.modules():
            if isinstance(module, (BaseTunerLayer, AuxiliaryTrainingWrapper)):
                _watched.update(module.modules())
        self.generation = _structure_changes[0]

    def bound(self) -> bool:
        """True while the model still computes with the bound parameters (nothing re-registered, nothing moved)."""
        return self.generation == _structure_changes[0] and all(
            p.data_ptr() == q for p, q in zip(self.params, self.ptrs))

    # -- checks ----------------------------------------------------------------------------------------------
    def _mismatch(self, label: Any, what: str) -> AdapterMismatchError:
        return AdapterMismatchError(f"{label}: does not fit the live adapter {self.name!r}: {what}")

    def fit(self, config_bytes: bytes | None, label: Any) -> Fit:
        """The checked configuration of an artifact (worked out once per distinct adapter_config.json)."""
        if config_bytes is None:
            raise InputError(f"{label}: no adapter_config.json with the artifact (open it from its directory, "
                             "or pass adapter_config= to ResidentArtifact)")
        fit = self._fits.get(config_bytes)
        if fit is None:
            if len(self._fits) >= 256:
                self._fits.clear()
            fit = self._fits[config_bytes] = self._make_fit(config_bytes, label)
        return fit

    def _make_fit(self, config_bytes: bytes, label: Any) -> Fit:
        from peft.utils.other import get_pattern_key

        raw = parse_config(config_bytes, label)
        peft_type = raw.get("peft_type")
        if peft_type != self.peft_type:
            raise self._mismatch(label, f"it is a {peft_type} adapter, the live one is {self.peft_type}")
        raw.pop("runtime_config", None)
        cls = type(self.reference)
        try:
            config = cls.from_peft_type(**cls.check_kwargs(**raw))
        except (TypeError, ValueError, KeyError) as err:
            raise InputError(f"{label}: adapter_config.json is not a valid {peft_type} config ({err})") from err
        config.inference_mode = self.reference.inference_mode
        ours, theirs = _plain(self.reference.to_dict()), _plain(config.to_dict())
        free = MAY_DIFFER | FAMILY_MAY_DIFFER.get(peft_type, frozenset())
        for key in sorted(ours.keys() | theirs.keys()):
            if key not in free and ours.get(key) != theirs.get(key):
                raise self._mismatch(label, f"{key} is {_short(theirs.get(key))}, the live adapter's is {_short(ours.get(key))}")
        init_ours, init_theirs = ours.get("init_lora_weights", True), theirs.get("init_lora_weights", True)
        if init_ours != init_theirs and not (init_ours in BASE_PRESERVING_INITS and init_theirs in BASE_PRESERVING_INITS):
            raise self._mismatch(label, f"init_lora_weights is {_short(init_theirs)}, the live adapter's is "
                                        f"{_short(init_ours)} (one of them rewrites base weights)")
        layers = []
        if peft_type == "LORA":
            for key, _ in self.lora_layers:
                r = config.rank_pattern.get(get_pattern_key(config.rank_pattern.keys(), key), config.r)
                alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), key), config.lora_alpha)
                layers.append((r, alpha, config.use_rslora, alpha / math.sqrt(r) if config.use_rslora else alpha / r))
        return Fit(config, tuple(layers))

    def check_tensors(self, artifact: ResidentArtifact, label: Any) -> tuple[bool, bool]:
        """(direct, padded): whether the artifact decodes straight into the flat buffer, and whether some of its
        LoRA factors have a smaller rank than the live ones (allowed once peft's
        ``prepare_model_for_compiled_hotswap`` has padded them, as peft's own hotswap allows)."""
        _, cols = artifact.checked
        carried = artifact.container.carried
        if carried.keys() != self.carried.keys():
            extra, missing = sorted(carried.keys() - self.carried.keys()), sorted(self.carried.keys() - carried.keys())
            raise self._mismatch(label, _difference("carried tensor", extra, missing))
        for name, t in carried.items():
            if tuple(t.shape) != tuple(self.carried[name].shape):
                raise self._mismatch(label, f"{name} has shape {tuple(t.shape)}, the live one {tuple(self.carried[name].shape)}")
        if (cols.names, cols.shapes, cols.offsets) == (self.names, self.shapes, self.offsets):
            direct = self.flat is not None and artifact.plan is not None \
                and single_kind(cols.dtypes, cols.theta_inits) is not None
            return direct, False
        if set(cols.names) != set(self.names):
            extra, missing = sorted(set(cols.names) - set(self.names)), sorted(set(self.names) - set(cols.names))
            raise self._mismatch(label, _difference("tensor", extra, missing))
        padded = False
        for name, shape in zip(cols.names, cols.shapes):
            live = tuple(self.live[name].shape)
            if shape == live:
                continue
            rank_dim = _rank_dim(name)
            if not (self.tensor_scalings and rank_dim is not None and len(shape) == len(live) == 2
                    and shape[1 - rank_dim] == live[1 - rank_dim] and shape[rank_dim] < live[rank_dim]):
                raise self._mismatch(label, f"{name} has shape {shape}, the live one {live}")
            padded = True
        return False, padded

    def check(self, artifact: ResidentArtifact) -> tuple[Fit, bool, bool]:
        """Everything a swap checks, nothing written: (fit, direct, padded) or AdapterMismatchError."""
        with self.lock:
            if not self.bound():
                self.bind()
            label = artifact.container.path
            return (self.fit(artifact.adapter_config, label), *self.check_tensors(artifact, label))

    # -- the swap --------------------------------------------------------------------------------------------
    def write(self, artifact: ResidentArtifact) -> None:
        """Put the artifact's adapter into this slot: checks first (AdapterMismatchError, nothing written), then
        one decode into the bound parameters, the carried tensors, scalings and config. Returns when the model
        is ready for its next forward. The payload was checked when the artifact was read (checksums); a decode
        that still fails (host memory changed since) raises after writing part of the adapter."""
        with self.lock:
            if self.name not in self.peft.peft_config:
                raise InputError(f"the model no longer has an adapter {self.name!r}")
            fit, direct, padded = self.check(artifact)
            merged = [key for key, m in self.lora_layers if self.name in m.merged_adapters]
            if merged:
                raise InputError(f"adapter {self.name!r} is merged into the base weights ({merged[0]}, ...); unmerge it first")
            with torch.no_grad():
                if direct:
                    self._decode(artifact)
                else:
                    self._copy(artifact)
                self._set_layers(fit, keep_rank=padded)
            if not padded:
                self.peft.peft_config[self.name] = fit.config
            self._clear_dora_caches()

    def _decode(self, artifact: ResidentArtifact) -> None:
        document, cols = artifact.checked
        dtype_name, theta_init = single_kind(cols.dtypes, cols.theta_inits)
        key = (document.scale, theta_init, dtype_name)
        values = self._values.get(key)
        if values is None:
            if len(self._values) >= 1024:
                self._values.clear()
            values = self._values[key] = value_table(document.scale, theta_init, DTYPES_BY_NAME[dtype_name]).to(self.flat.dtype)
        with named_payload_errors(artifact.container.path):
            finish = get_codec(document.codec).decode_into(artifact.plan, artifact.container.payload, self.flat, values)
            for name, t in artifact.container.carried.items():
                self.carried[name].copy_(t, non_blocking=True)
            finish()

    def _copy(self, artifact: ResidentArtifact) -> None:
        """The general path (mixed dtypes, padded ranks, another layout): decode, then copy per tensor."""
        device = self.device or self.params[0].device
        for name, t in artifact.load(device).items():
            p = self.live[name]
            if p.shape == t.shape:
                p.copy_(t)
            else:  # a smaller rank into factors padded with zeros
                p.zero_()
                p[tuple(slice(0, s) for s in t.shape)].copy_(t)

    def _set_layers(self, fit: Fit, *, keep_rank: bool) -> None:
        if (fit.layers, keep_rank) == self.applied:
            return
        name = self.name
        for i, ((_, m), (r, alpha, rslora, scaling)) in enumerate(zip(self.lora_layers, fit.layers)):
            current = m.scaling[name]
            if isinstance(current, torch.Tensor):  # converted by prepare_model_for_compiled_hotswap: fill, no recompile
                if self.written[i] != scaling:
                    current.fill_(scaling)
                    self.written[i] = scaling
            elif current != scaling:
                m.scaling[name] = scaling
            if m.lora_alpha[name] != alpha:
                m.lora_alpha[name] = alpha
            if not keep_rank and m.r[name] != r:
                m.r[name] = r
            if m.use_rslora.get(name) != rslora:
                m.use_rslora[name] = rslora
        self.applied = (fit.layers, keep_rank)

    def _clear_dora_caches(self) -> None:
        from peft.tuners.lora import dora

        if not dora.ENABLE_DORA_CACHING:
            return
        for _, m in self.lora_layers:
            magnitude = getattr(m, "lora_magnitude_vector", {})
            if self.name in magnitude:
                module = magnitude[self.name]
                was = module.training
                module.train(True)  # peft's DoRA layers clear their cache when set to training
                module.train(was)


def _rank_dim(name: str) -> int | None:
    """The rank dimension of a LoRA factor's saved tensor (A: rows, B: columns), or None."""
    parts = name.split(".")
    if "lora_A" in parts or "lora_embedding_A" in parts:
        return 0
    if "lora_B" in parts or "lora_embedding_B" in parts:
        return 1
    return None


def _difference(what: str, extra: list[str], missing: list[str]) -> str:
    parts = []
    if extra:
        parts.append(f"{len(extra)} {what}(s) the live adapter lacks (first: {extra[0]})")
    if missing:
        parts.append(f"{len(missing)} {what}(s) of the live adapter missing (first: {missing[0]})")
    return "; ".join(parts)
