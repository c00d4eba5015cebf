"""Trainable tokens (peft ``PeftType.TRAINABLE_TOKENS``). Read: peft/tuners/trainable_tokens/layer.py
``TrainableTokensLayer.update_layer`` (``trainable_tokens_delta`` holds whole embedding rows, initialised as a
copy of the base's rows, which it replaces); saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: none. The rows' θ_init is the base's own rows (a per-row tensor, not a constant), so they can only be
carried and nothing would be compressed; the type is refused. (Trainable-token rows inside a LoRA adapter,
``trainable_token_indices``, are carried beside its compressed factors.)"""

from __future__ import annotations

from compeft.families.base import Family

FAMILY = Family("TRAINABLE_TOKENS", refused=(
    "trainable_tokens_delta holds whole embedding rows initialised from the base's rows (θ_init is the base "
    "itself, not a constant), so nothing can be compressed as a delta"))
