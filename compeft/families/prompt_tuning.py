"""Prompt tuning (peft ``PeftType.PROMPT_TUNING``). Read: peft/tuners/prompt_tuning/model.py
``PromptEmbedding.__init__`` (the virtual-token embeddings: nn.Embedding's normal draw for ``RANDOM``, the base's
embeddings of ``prompt_tuning_init_text`` or of sampled vocabulary for ``TEXT``/``SAMPLE_VOCAB``); saving:
peft/utils/save_and_load.py ``get_peft_model_state_dict`` with peft/tuners/tuners_utils.py
``BasePromptEncoder._get_adapter_state_dict`` and peft/peft_model.py ``PeftModel.get_prompt_embedding_to_save``
(the encoder's output for the virtual tokens, saved as ``prompt_embeddings``).

Rule: ``prompt_embeddings`` is a delta from 0. ComPEFT's convention for a trainable tensor whose start is not a
constant (a random draw, or embeddings that only the base and its tokenizer could reproduce) makes it a delta from
0. A soft prompt is dense and compresses poorly: the artifact is correct, calibration decides whether it stays
usable."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("PROMPT_TUNING", deltas=zeros("prompt_embeddings"))
