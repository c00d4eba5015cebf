"""PEANuT (peft ``PeftType.PEANUT``). Read: peft/tuners/peanut/layer.py ``PeanutLayer.update_layer`` and
``reset_peanut_parameters`` (``peanut_A``, the encoders and decoders Kaiming-uniform, ``peanut_B`` zero, or
Kaiming-uniform without ``init_weights``); saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: ``peanut_A``, ``peanut_B``, ``peanut_encoders`` and ``peanut_decoders`` are deltas from 0 (random weights by
ComPEFT's convention)."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("PEANUT", deltas=zeros("peanut_A", "peanut_B", "peanut_encoders", "peanut_decoders"))
