"""Lily (peft ``PeftType.LILY``). Read: peft/tuners/lily/layer.py ``LilyLayer.update_layer`` and
``reset_lily_parameters`` (``lily_A`` and ``lily_router`` Kaiming-uniform, the shared experts ``lily_B`` zero,
Kaiming-uniform without ``init_weights``); saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: ``lily_A``, ``lily_B`` and ``lily_router`` are deltas from 0 (random weights by ComPEFT's convention)."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("LILY", deltas=zeros("lily_A", "lily_B", "lily_router"))
