"""BOFT (peft ``PeftType.BOFT``). Read: peft/tuners/boft/layer.py ``BOFTLayer.reset_boft_parameters`` (butterfly
generators ``boft_R`` zero and scales ``boft_s`` one; normal around 0 and 1 under ``init_weights: false``);
saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: ``boft_R`` is a delta from 0, ``boft_s`` a delta from 1."""

from __future__ import annotations

from compeft.families.base import Family

FAMILY = Family("BOFT", deltas={"boft_R": 0.0, "boft_s": 1.0})
