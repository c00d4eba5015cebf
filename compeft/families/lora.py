"""LoRA (peft ``PeftType.LORA``, DoRA as LoRA with ``use_dora``): ``lora_A``/``lora_B`` (and the embedding
variants ``lora_embedding_A``/``lora_embedding_B``) are deltas from θ_init = 0. peft initialises B to zero
and A randomly (peft/tuners/lora/layer.py, ``LoraLayer.reset_lora_parameters``); ComPEFT's convention for a
randomly initialised trainable factor is a delta from 0 (paper §2, as for LoRA A). DoRA magnitudes
(``lora_magnitude_vector``), ``modules_to_save`` copies and saved base layers are carried."""

from __future__ import annotations

from compeft.families.base import Family

FAMILY = Family("LORA", {"lora_A": 0.0, "lora_B": 0.0, "lora_embedding_A": 0.0, "lora_embedding_B": 0.0})
