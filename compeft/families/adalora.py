"""AdaLoRA (peft ``PeftType.ADALORA``). Read: peft/tuners/adalora/layer.py ``AdaLoraLayer.update_layer`` and
``reset_lora_parameters`` (singular values ``lora_E`` zero, ``lora_A``/``lora_B`` normal with std 0.02; any truthy
``init_lora_weights`` runs this reset, so PiSSA-style strings change nothing; ``ranknum`` is not saved);
saving: peft/tuners/adalora/model.py ``AdaLoraModel._get_adapter_state_dict`` (ranks resized by ``rank_pattern``).

Rule: ``lora_A``, ``lora_B`` (random: ComPEFT's convention, a delta from 0) and ``lora_E`` are deltas from 0."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("ADALORA", deltas=zeros("lora_A", "lora_B", "lora_E", "lora_embedding_A", "lora_embedding_B"),
                carried=("ranknum",))
