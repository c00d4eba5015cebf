"""Cartridges (peft ``PeftType.CARTRIDGE``). Read: peft/tuners/cartridge/model.py ``CartridgeEncoder.__init__`` (a KV
prefix of frozen and trainable normal draws, or key/values the base computed for an init text); saving:
peft/utils/save_and_load.py ``get_peft_model_state_dict`` with peft/tuners/tuners_utils.py
``BasePromptEncoder._get_adapter_state_dict`` and peft/peft_model.py ``PeftModel.get_prompt_embedding_to_save``
(the encoder's output for the virtual tokens, saved as ``prompt_embeddings``).

Rule: ``prompt_embeddings`` (the KV prefix, its frozen tokens included) is a delta from 0 (ComPEFT's convention
for a start that is not a constant, as stated in prompt_tuning.py: a dense prompt compresses correctly,
calibration decides whether it stays usable)."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("CARTRIDGE", deltas=zeros("prompt_embeddings"))
