"""GraLoRA (peft ``PeftType.GRALORA``). Read: peft/tuners/gralora/layer.py ``GraloraLayer.update_layer`` (block
factors ``gralora_A`` Kaiming-uniform and ``gralora_B`` zero, the hybrid ``gralora_A_general``/``gralora_B_general``
likewise; both random under ``init_weights: false``); saving: peft/tuners/tuners_utils.py
``BaseTuner._get_adapter_state_dict``.

Rule: all four factors are deltas from 0."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("GRALORA", deltas=zeros("gralora_A", "gralora_B", "gralora_A_general", "gralora_B_general"))
