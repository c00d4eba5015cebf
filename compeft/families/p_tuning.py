"""P-tuning (peft ``PeftType.P_TUNING``). Read: peft/tuners/p_tuning/model.py ``PromptEncoder.__init__`` (an
embedding with nn.Embedding's normal draw fed through a randomly initialised MLP or LSTM; at save time the
encoder's output is stored); saving: peft/utils/save_and_load.py ``get_peft_model_state_dict`` with
peft/tuners/tuners_utils.py ``BasePromptEncoder._get_adapter_state_dict`` and peft/peft_model.py
``PeftModel.get_prompt_embedding_to_save`` (the encoder's output for the virtual tokens, saved as
``prompt_embeddings``).

Rule: ``prompt_embeddings`` is a delta from 0 (ComPEFT's convention for a start that is not a constant, as stated
in prompt_tuning.py: a dense prompt compresses correctly, calibration decides whether it stays usable)."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("P_TUNING", deltas=zeros("prompt_embeddings"))
