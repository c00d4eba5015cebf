"""What an adapter family states about its saved tensors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """One adapter family: its peft type and its delta tensors (key component → θ_init)."""

    peft_type: str
    deltas: Mapping[str, float]
