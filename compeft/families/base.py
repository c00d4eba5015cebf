"""What an adapter family states about its saved tensors: for each key component, a delta from which θ_init,
or carried bit for bit; and, for configurations no rule fits, why they are refused."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

ThetaInit = float | Callable[[Mapping, tuple[int, ...]], float]
"""θ_init of a delta tensor: a constant, or a function of (adapter config, tensor shape) for a constant that
peft takes from the config (VeRA's ``d_initial``) or from the shape (RandLoRA's 1/max(shape))."""


@dataclass(frozen=True)
class Rule:
    """One adapter's classification: key component → θ_init for delta tensors, components carried bit for bit.

    A key whose path components include a carried one is carried; otherwise the last component with a θ_init
    makes it a delta; every other key (``modules_to_save`` copies, saved base layers and biases, buffers) is
    carried."""

    config: Mapping = field(repr=False)
    deltas: Mapping[str, ThetaInit]
    carried: frozenset[str]

    def theta_init(self, key: str, shape: tuple[int, ...]) -> float | None:
        """θ_init of the tensor saved under ``key``, or None when it is carried."""
        parts = key.split(".")
        if self.carried.intersection(parts):
            return None
        for part in reversed(parts):  # the innermost component decides (``psoft_R.vector_a``: vector_a's θ_init)
            if part in self.deltas:
                theta = self.deltas[part]
                return float(theta) if isinstance(theta, (int, float)) else float(theta(self.config, tuple(shape)))
        return None


@dataclass(frozen=True)
class Family:
    """One adapter family (a peft type, or the diffusers LoRA file): which saved tensors are deltas and from which
    θ_init, which are carried, how its config changes that (``variant``: component → θ_init, or None to carry it),
    and when no rule fits (``refusal``: config → the reason, or None; ``refused``: the whole type)."""

    name: str
    deltas: Mapping[str, ThetaInit] = field(default_factory=dict)
    carried: tuple[str, ...] = ()
    variant: Callable[[Mapping], Mapping[str, ThetaInit | None]] | None = None
    refusal: Callable[[Mapping], str | None] | None = None
    refused: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "deltas", MappingProxyType(dict(self.deltas)))
        if not self.refused and not self.deltas:
            raise ValueError(f"family {self.name}: no delta components and no reason to refuse")

    def why_refused(self, config: Mapping) -> str | None:
        """Why an adapter with this config cannot be compressed (one sentence), or None."""
        if self.refused:
            return self.refused
        return self.refusal(config) if self.refusal else None

    def rule(self, config: Mapping) -> Rule:
        """The classification for one adapter config (call ``why_refused`` first)."""
        deltas, carried = dict(self.deltas), set(self.carried)
        for part, theta in (self.variant(config) if self.variant else {}).items():
            if theta is None:
                deltas.pop(part, None)
                carried.add(part)
            else:
                deltas[part] = theta
                carried.discard(part)
        return Rule(MappingProxyType(dict(config)), MappingProxyType(deltas), frozenset(carried))


def zeros(*parts: str) -> dict[str, float]:
    """Delta components whose θ_init is 0."""
    return dict.fromkeys(parts, 0.0)


def config_value(key: str, default):
    """θ_init read from the adapter config (peft's default when the key is absent)."""

    def theta(config: Mapping, shape: tuple[int, ...]) -> float:
        value = config.get(key, default)
        return float(default if value is None else value)

    return theta


def init_weights_off(config: Mapping, key: str = "init_weights") -> bool:
    """Whether the config turns peft's default initialisation off (``init_weights: false``, a debugging setting)."""
    return config.get(key, True) is False
