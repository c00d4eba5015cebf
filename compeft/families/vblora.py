"""VB-LoRA (peft ``PeftType.VBLORA``). Read: peft/tuners/vblora/layer.py ``VBLoRALayer.update_layer`` and
``reset_vblora_logits`` (logits zero, normal with ``init_logits_std``) and peft/tuners/vblora/model.py
``VBLoRAModel._init_vblora_vector_bank`` (the shared ``vblora_vector_bank`` uniform in ±init_vector_bank_bound) and
``VBLoRAModel._get_adapter_state_dict`` (with ``save_only_topk_weights``: integer ``*_topk_indices`` and the
softmax ``*_topk_weights`` instead of the logits).

Rule: ``vblora_logits_A``/``vblora_logits_B`` and the vector bank are deltas from 0 (random inits by ComPEFT's
convention); the top-k indices and weights are carried."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("VBLORA", deltas=zeros("vblora_logits_A", "vblora_logits_B", "vblora_vector_bank"))
