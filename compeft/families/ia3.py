"""(IA)³ (peft ``PeftType.IA3``): the learned scaling vectors ``ia3_l`` are deltas from θ_init = 1, peft's
initial value (peft/tuners/ia3/layer.py, ``IA3Layer.reset_ia3_parameters`` fills them with ones);
``modules_to_save`` copies are carried."""

from __future__ import annotations

from compeft.families.base import Family

FAMILY = Family("IA3", {"ia3_l": 1.0})
