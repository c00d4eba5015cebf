"""(IA)³ (peft ``PeftType.IA3``). Read: peft/tuners/ia3/layer.py ``IA3Layer.update_layer`` and
``reset_ia3_parameters`` (the learned vectors ``ia3_l`` filled with ones; ``init_ia3_weights: false`` leaves a
normal draw); saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: ``ia3_l`` is a delta from θ_init = 1, the identity scaling (also under ``init_ia3_weights: false``, a
debugging setting); ``modules_to_save`` copies are carried."""

from __future__ import annotations

from compeft.families.base import Family

FAMILY = Family("IA3", deltas={"ia3_l": 1.0})
