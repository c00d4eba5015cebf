"""MiSS (peft ``PeftType.MISS``). Read: peft/tuners/miss/layer.py ``MissLayer.update_layer``,
``reset_miss_parameters``/``reset_bat_parameters``/``reset_mini_parameters`` (the shard ``miss_block`` zero) and
``reset_miss_parameters_random``; saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: ``miss_block`` is a delta from 0."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("MISS", deltas=zeros("miss_block"))
