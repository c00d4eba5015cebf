"""Poly (peft ``PeftType.POLY``). Read: peft/tuners/poly/layer.py ``PolyLayer.update_layer`` and
``reset_poly_parameters`` (skill factors ``poly_lora_A`` Kaiming-uniform, ``poly_lora_B`` zero) and
peft/tuners/poly/router.py ``PolyRouter.reset`` (``module_logits`` uniform in ±1e-3); saving:
peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: ``poly_lora_A``, ``poly_lora_B`` and ``poly_router`` are deltas from 0."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("POLY", deltas=zeros("poly_lora_A", "poly_lora_B", "poly_router"))
