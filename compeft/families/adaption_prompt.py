"""Adaption prompt, LLaMA-Adapter (peft ``PeftType.ADAPTION_PROMPT``). Read: peft/tuners/adaption_prompt/layer.py
``_BaseAdaptedAttention.__init__`` (the prompt ``adaption_prompt`` a normal draw, the gate ``adaption_gate`` zero);
saving: peft/tuners/adaption_prompt/model.py ``AdaptionPromptModel._get_adapter_state_dict``.

Rule: ``adaption_prompt`` (random: ComPEFT's convention) and ``adaption_gate`` are deltas from 0."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("ADAPTION_PROMPT", deltas=zeros("adaption_prompt", "adaption_gate"))
