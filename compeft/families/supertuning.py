"""SuperTuning (peft ``PeftType.SUPERTUNING``). Read: peft/tuners/supertuning/layer.py
``SuperTuningLayer.update_layer`` (sparse ``supertuning_values`` zero under ``init_weights``, positions
``supertuning_indices`` an int32 buffer; optional ``supertuning_lora_A`` Kaiming-uniform and ``supertuning_lora_B``
zero); saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: ``supertuning_values`` and the LoRA factors are deltas from 0; ``supertuning_indices`` are carried."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("SUPERTUNING", deltas=zeros("supertuning_values", "supertuning_lora_A", "supertuning_lora_B"),
                carried=("supertuning_indices",))
