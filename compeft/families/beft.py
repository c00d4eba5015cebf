"""BEFT (peft ``PeftType.BEFT``). Read: peft/tuners/beft/layer.py ``BeftLayer.update_layer`` and
``reset_beft_parameters`` (the learned bias ``beft_bias`` zero); saving: peft/tuners/tuners_utils.py
``BaseTuner._get_adapter_state_dict``.

Rule: ``beft_bias`` is a delta from 0."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("BEFT", deltas=zeros("beft_bias"))
