"""TinyLoRA (peft ``PeftType.TINYLORA``). Read: peft/tuners/tinylora/model.py ``TinyLoraModel._create_and_replace``
(the shared trainable vectors ``tinylora_v`` zero, or uniform under ``init_weights: 'uniform'``) and
``TinyLoraModel._get_adapter_state_dict`` (frozen ``tinylora_A``/``tinylora_B`` from the base's SVD, random
projections ``tinylora_P`` when ``save_projection``); peft/tuners/tinylora/layer.py ``TinyLoraLayer.update_layer``.

Rule: ``tinylora_v`` is a delta from 0; the frozen ``tinylora_A``, ``tinylora_B`` and ``tinylora_P`` are carried."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("TINYLORA", deltas=zeros("tinylora_v"), carried=("tinylora_A", "tinylora_B", "tinylora_P"))
