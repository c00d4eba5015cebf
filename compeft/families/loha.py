"""LoHa (peft ``PeftType.LOHA``). Read: peft/tuners/loha/layer.py ``LoHaLayer.create_adapter_parameters``,
``reset_adapter_parameters`` (``hada_w2_b`` zero, the other factors and the Tucker cores Kaiming-uniform) and
``reset_adapter_parameters_random`` (``init_weights: false``); saving: peft/tuners/tuners_utils.py
``BaseTuner._get_adapter_state_dict``.

Rule: every factor (``hada_w1_a``, ``hada_w1_b``, ``hada_w2_a``, ``hada_w2_b``, ``hada_t1``, ``hada_t2``) is a delta
from 0 (the zero factor, and the random ones by ComPEFT's convention)."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("LOHA", deltas=zeros("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"))
