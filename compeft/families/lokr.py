"""LoKr (peft ``PeftType.LOKR``). Read: peft/tuners/lokr/layer.py ``LoKrLayer.create_adapter_parameters``,
``reset_adapter_parameters`` (``lokr_w1``/``lokr_w1_a`` zero, the rest Kaiming-uniform),
``reset_adapter_parameters_random`` and ``reset_adapter_parameters_lycoris_way`` (``init_weights: 'lycoris'``:
``lokr_w2``/``lokr_w2_b`` zero); saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: every Kronecker factor and core is a delta from 0 (zero factors, random ones by ComPEFT's convention)."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("LOKR", deltas=zeros("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"))
