"""Uni-LoRA (peft ``PeftType.UNILORA``). Read: peft/tuners/unilora/model.py ``UniLoraModel._init_unilora_theta_d``
(the one shared trainable vector ``unilora_theta_d``, uniform in ±init_theta_d_bound or zero) and
``UniLoraModel._get_adapter_state_dict``; the index and scale buffers are rebuilt from ``projection_prng_key``.

Rule: ``unilora_theta_d`` is a delta from 0; any saved index buffers are carried."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("UNILORA", deltas=zeros("unilora_theta_d"))
