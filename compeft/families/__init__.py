"""Adapter families: for each peft type, which saved tensors are deltas (and from which θ_init) and which are
carried bit for bit. A plain-data registry, one module per family (as peft has one module per tuner).

Today a saved tensor is classified by its key's components against the union of the families' delta
components (a key never mixes families); everything else is carried.
"""

from __future__ import annotations

from collections.abc import Mapping

from compeft.families import ia3, lora
from compeft.families.base import Family

FAMILIES: Mapping[str, Family] = {f.peft_type: f for f in (lora.FAMILY, ia3.FAMILY)}
DELTA_COMPONENTS: Mapping[str, float] = {part: theta for f in FAMILIES.values() for part, theta in f.deltas.items()}
