"""DeLoRA (peft ``PeftType.DELORA``). Read: peft/tuners/delora/layer.py ``DeloraLayer.update_layer`` and
``reset_delora_parameters`` (``delora_A`` Kaiming-uniform, ``delora_B`` zero, ``delora_lambda`` the config's
``delora_lambda`` or its ``lambda_pattern`` entry; ``delora_w_norm`` a buffer of the base weight's norms);
peft/tuners/delora/model.py ``DeloraModel._create_and_replace``; saving: peft/tuners/tuners_utils.py
``BaseTuner._get_adapter_state_dict``.

Rule: ``delora_A`` and ``delora_B`` are deltas from 0. The per-layer norm bound ``delora_lambda`` (one number per
layer, its initial value chosen per layer by ``lambda_pattern``) and the base-derived ``delora_w_norm`` are carried."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("DELORA", deltas=zeros("delora_A", "delora_B"), carried=("delora_lambda", "delora_w_norm"))
