"""The configuration of each operation, validated once: compressing (``CompressionConfig``) and choosing
α on a validation task (``CalibrationConfig``).

Frozen, checked on construction (as peft's configs are), round-tripping through ``to_json``/``from_json``;
``key()`` is the registry's idempotency key (the sha256 of ``key_fields()``, the options that define an
artifact, device and other run-time knobs left out). The CLI flags (``compeft.cliargs``) and the flows'
parameter models (``flows.params``) are generated from these fields and their ``metadata``: one edit adds
an option everywhere. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from compeft.codecs import CODEC_IDS, DEFAULT_CODEC
from compeft.errors import OptionError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
PAPER_ALPHAS = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)
DEFAULT_DENSITIES = (0.05, 0.1, 0.2)
SEARCH_MODES = ("refine", "grid")
DEVICES = ("auto", "cpu", "cuda")  # the choices offered (flags, run forms); check_device also takes cuda:N


def option(help: str, *, choices: tuple[str, ...] | None = None, key: bool = True, advanced: bool = False,
           label: str | None = None) -> dict:
    """Field metadata: the help text of its flag and form field, fixed choices, whether it belongs to the key,
    whether a form shows it after the main options (``advanced``) and its label there (default: its name in words)."""
    return {"help": help, "choices": choices, "key": key, "advanced": advanced, "label": label}


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise OptionError(f"{name} {value!r} is not a number", name)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"{name} {value!r} is not a number", name) from None
    if not math.isfinite(number):
        raise OptionError(f"{name} {value!r} must be a finite number", name)
    return number


def check_density(value: Any, name: str = "density") -> float:
    """Density k: a finite number in (0, 1]."""
    k = _number(value, name)
    if not 0.0 < k <= 1.0:
        raise OptionError(f"{name} {value!r} must be in (0, 1]", name)
    return k


def check_alpha(value: Any, name: str = "alpha") -> float:
    """α: a finite number > 0."""
    a = _number(value, name)
    if not a > 0:
        raise OptionError(f"{name} {value!r} must be a finite number > 0", name)
    return a


def check_codec(value: Any) -> str:
    """A registered codec id (compeft.codecs.registry)."""
    from compeft.errors import UnknownCodecError

    if value not in CODEC_IDS:
        raise UnknownCodecError(f"unknown codec {value!r} (known: {', '.join(sorted(CODEC_IDS))})")
    return value


def check_device(value: Any) -> str:
    """auto, cpu, cuda or cuda:N (whether CUDA is there is asked when the device is used)."""
    name = str(value).strip().lower()
    if not DEVICE_PATTERN.match(name):
        from compeft.errors import DeviceError

        raise DeviceError(f"device {value!r} is not one of auto, cpu, cuda, cuda:N")
    return name


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces, so equal values hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def key_hash(fields: Mapping[str, Any]) -> str:
    """sha256 of the key fields (integers counted as floats, so 100 and 100.0 are one key)."""
    normalized = {k: (float(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in fields.items()}
    return hashlib.sha256(canonical_json(normalized).encode()).hexdigest()


class _Config:
    """JSON round trip and the idempotency key, shared by the configuration dataclasses."""

    MODE: ClassVar[str]

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def to_json(self) -> dict[str, Any]:
        """Every field as JSON values (tuples as lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]):
        """The config of ``to_json``'s output (unknown keys are an OptionError)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise OptionError(f"{cls.__name__}: unknown option(s) {', '.join(unknown)}", unknown[0])
        return cls(**data)

    def replace(self, **changes: Any):
        """A copy with some fields changed (and checked again)."""
        return dataclasses.replace(self, **changes)

    def key_fields(self) -> dict[str, Any]:
        """The options that define an artifact (the registry stores them beside the key)."""
        fields = {"mode": self.MODE}
        fields.update({f.name: v for f, v in ((f, getattr(self, f.name)) for f in dataclasses.fields(self)) if f.metadata["key"]})
        return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}

    def key(self) -> str:
        """The registry's idempotency key: sha256 of ``key_fields()``."""
        return key_hash(self.key_fields())


@dataclass(frozen=True)
class CompressionConfig(_Config):
    """How to compress: keep the top-k fraction of τ, scale the signs by α·σ, code them with ``codec``."""

    MODE: ClassVar[str] = "fixed"

    density: float = field(default=0.1, metadata=option("fraction k of entries kept (0 < k <= 1)", label="Density k"))
    alpha: float = field(default=1.0, metadata=option("scale factor α; kept entries become ±α·σ", label="α"))
    codec: str = field(default=DEFAULT_CODEC, metadata=option(
        "payload codec: golomb (smallest) or bitmask (2 bits/param)", choices=CODEC_IDS, advanced=True))
    device: str = field(default="auto", metadata=option(
        "auto, cpu or cuda (pin a GPU with CUDA_VISIBLE_DEVICES)", choices=DEVICES, key=False, advanced=True))

    def __post_init__(self) -> None:
        self._set("density", check_density(self.density))
        self._set("alpha", check_alpha(self.alpha))
        self._set("codec", check_codec(self.codec))
        self._set("device", check_device(self.device))


def _grid(values: Any, name: str, check) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise OptionError(f"{name} must be a list of numbers, got {values!r}", name)
    grid = tuple(sorted({check(v, name) for v in values}))
    if not grid:
        raise OptionError(f"{name} needs at least one value", name)
    return grid


@dataclass(frozen=True)
class CalibrationConfig(_Config):
    """How to choose (k, α) for an adapter on a validation task with lm-eval, and write the artifact there."""

    MODE: ClassVar[str] = "calibrate"

    task: str = field(metadata=option("lm-eval task name or path to a task YAML (local data files)"))
    base: str | None = field(default=None, metadata=option(
        "base model directory or Hub id (default: the adapter's own)", label="Base model"))
    densities: tuple[float, ...] = field(default=DEFAULT_DENSITIES, metadata=option(
        "calibration densities k", label="Calibration densities k"))
    alphas: tuple[float, ...] = field(default=PAPER_ALPHAS, metadata=option("calibration α grid", label="Calibration α grid"))
    metric: str = field(default="acc", metadata=option("metric of the validation task to maximise"))
    limit: float | None = field(default=None, metadata=option(
        "evaluate only N documents (or a fraction < 1 of them)", advanced=True, label="Document limit"))
    tolerance: float = field(default=0.0, metadata=option(
        "choose the smallest artifact within T of the best score", advanced=True, label="Score tolerance"))
    search: str = field(default="refine", metadata=option(
        "refine: coarse α sweep, then refine around the best; grid: every point", choices=SEARCH_MODES, advanced=True))
    seed: int = field(default=1234, metadata=option("seed for lm-eval sampling", key=False, advanced=True))
    batch_size: int = field(default=64, metadata=option("lm-eval batch size", key=False, advanced=True))
    codec: str = field(default=DEFAULT_CODEC, metadata=option("payload codec of the artifact", choices=CODEC_IDS, advanced=True))
    device: str = field(default="auto", metadata=option(
        "auto, cpu or cuda (pin a GPU with CUDA_VISIBLE_DEVICES)", choices=DEVICES, key=False, advanced=True))

    def __post_init__(self) -> None:
        for name in ("task", "base"):
            if isinstance(getattr(self, name), os.PathLike):
                self._set(name, os.fspath(getattr(self, name)))
        if not isinstance(self.task, str) or not self.task.strip():
            raise OptionError("task is empty", "task")
        if self.base is not None and (not isinstance(self.base, str) or not self.base):
            raise OptionError(f"base {self.base!r} must be a directory or a model id", "base")
        self._set("densities", _grid(self.densities, "densities", check_density))
        self._set("alphas", _grid(self.alphas, "alphas", check_alpha))
        if not isinstance(self.metric, str) or not self.metric:
            raise OptionError(f"metric {self.metric!r} must be a metric name", "metric")
        if self.limit is not None:
            limit = _number(self.limit, "limit")
            if not limit > 0:
                raise OptionError(f"limit {self.limit!r} must be > 0", "limit")
            self._set("limit", int(limit) if limit >= 1 else limit)
        tolerance = _number(self.tolerance, "tolerance")
        if tolerance < 0:
            raise OptionError(f"tolerance {self.tolerance!r} must be a finite number >= 0", "tolerance")
        self._set("tolerance", tolerance)
        if self.search not in SEARCH_MODES:
            raise OptionError(f"search {self.search!r} is not one of {', '.join(SEARCH_MODES)}", "search")
        for name in ("seed", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or (name == "batch_size" and value < 1):
                raise OptionError(f"{name} {value!r} must be an integer" + (" >= 1" if name == "batch_size" else ""), name)
        self._set("codec", check_codec(self.codec))
        self._set("device", check_device(self.device))


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of every field of a config class (for the generated flags and forms)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


# ---------------------------------------------------------------------------------------- operations (issue 14)
MERGE_METHOD_NAMES = ("task_arithmetic", "ties")
MERGE_OUTPUTS = ("peft", "compeft")


def _finite_numbers(values: Any, name: str) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise OptionError(f"{name} must be a list of numbers, got {values!r}", name)
    numbers = tuple(_number(v, name) for v in values)
    if not numbers:
        raise OptionError(f"{name} needs at least one value", name)
    return numbers


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(f"{name} {value!r} must be an integer >= 1", name)
    return value


@dataclass(frozen=True)
class SimilarityConfig(_Config):
    """How to compare compressed artifacts: where the popcounts run."""

    MODE: ClassVar[str] = "similarity"

    device: str = field(default="auto", metadata=option("auto, cpu, cuda or cuda:N", key=False))

    def __post_init__(self) -> None:
        self._set("device", check_device(self.device))


@dataclass(frozen=True)
class MergeConfig(_Config):
    """How to merge compressed artifacts in parameter space: the method, its weights and λ, and the output form."""

    MODE: ClassVar[str] = "merge"

    method: str = field(metadata=option(
        "task_arithmetic: λ·Σ w_i τ_i; ties: elect a sign per entry, disjoint mean of the inputs that agree",
        choices=MERGE_METHOD_NAMES))
    weights: tuple[float, ...] | None = field(default=None, metadata=option("one weight per input (default 1 each)"))
    lam: float = field(default=1.0, metadata=option("λ, the scale of the merged task vector"))
    to: str = field(default="peft", metadata=option(
        "peft: a standard PEFT adapter directory; compeft: compress the merged task vector again",
        choices=MERGE_OUTPUTS))
    density: float | None = field(default=None, metadata=option(
        "--to compeft: fraction k kept (default: the merge's own support)"))
    alpha: float | None = field(default=None, metadata=option(
        "--to compeft: α (default: the one whose scale α·σ is the mean kept magnitude)"))
    codec: str = field(default=DEFAULT_CODEC, metadata=option("--to compeft: payload codec", choices=CODEC_IDS))
    device: str = field(default="auto", metadata=option("auto, cpu, cuda or cuda:N", key=False))

    def __post_init__(self) -> None:
        if self.method not in MERGE_METHOD_NAMES:
            raise OptionError(f"method {self.method!r} is not one of {', '.join(MERGE_METHOD_NAMES)}", "method")
        if self.weights is not None:
            self._set("weights", _finite_numbers(self.weights, "weights"))
        self._set("lam", _number(self.lam, "lam"))
        if self.to not in MERGE_OUTPUTS:
            raise OptionError(f"to {self.to!r} is not one of {', '.join(MERGE_OUTPUTS)}", "to")
        for name, check in (("density", check_density), ("alpha", check_alpha)):
            value = getattr(self, name)
            if value is not None:
                if self.to != "compeft":
                    raise OptionError(f"{name} applies to --to compeft only", name)
                self._set(name, check(value, name))
        self._set("codec", check_codec(self.codec))
        self._set("device", check_device(self.device))


@dataclass(frozen=True)
class ComposeConfig(_Config):
    """How to compose a new adapter for a task from compressed experts (LoraHub): learn one weight per expert
    with a gradient-free optimizer, scored by lm-eval on a few examples of the task."""

    MODE: ClassVar[str] = "compose"

    task: str = field(metadata=option("lm-eval task name or path to a task YAML (its validation split is used)"))
    base: str = field(metadata=option("base model directory or Hub id the experts were trained on"))
    shots: int = field(default=20, metadata=option("examples of the task the weights are learned on"))
    budget: int = field(default=40, metadata=option("evaluations the optimizer may spend"))
    metric: str = field(default="acc", metadata=option("metric of the task to maximise"))
    bound: float = field(default=1.5, metadata=option("each weight is searched in [-bound, bound]", advanced=True))
    regularization: float = field(default=0.05, metadata=option(
        "penalty on the mean |weight| (LoraHub's L1 term), subtracted from the score", advanced=True))
    seed: int = field(default=1234, metadata=option("seed of the optimizer and of lm-eval", advanced=True))
    batch_size: int = field(default=64, metadata=option("lm-eval batch size", key=False, advanced=True))
    device: str = field(default="auto", metadata=option("auto, cpu, cuda or cuda:N", key=False))

    def __post_init__(self) -> None:
        for name in ("task", "base"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
                self._set(name, value)
            if not isinstance(value, str) or not value.strip():
                raise OptionError(f"{name} {value!r} must be a non-empty string", name)
        for name in ("shots", "budget", "batch_size"):
            _positive_int(getattr(self, name), name)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise OptionError(f"seed {self.seed!r} must be an integer", "seed")
        if not isinstance(self.metric, str) or not self.metric:
            raise OptionError(f"metric {self.metric!r} must be a metric name", "metric")
        bound = _number(self.bound, "bound")
        if not bound > 0:
            raise OptionError(f"bound {self.bound!r} must be > 0", "bound")
        self._set("bound", bound)
        regularization = _number(self.regularization, "regularization")
        if regularization < 0:
            raise OptionError(f"regularization {self.regularization!r} must be >= 0", "regularization")
        self._set("regularization", regularization)
        self._set("device", check_device(self.device))
