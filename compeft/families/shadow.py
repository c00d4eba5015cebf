"""Shadow (peft ``PeftType.SHADOW``). Read: peft/tuners/shadow/layers.py ``ShadowLayer.update_layer`` (injection
``shadow_down`` Kaiming-uniform, ``shadow_up`` zero, update MLPs ``shadow_update_transform``/``shadow_update_gate``
default nn.Linear inits) and peft/tuners/shadow/model.py ``ShadowModel._init_shadow_backbone`` (a side network:
a freshly built mirror of the base's architecture or a pretrained checkpoint, with ``shadow_projection`` and
``shadow_head``); saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: the injection and update layers are deltas from 0 (random or zero inits: ComPEFT's convention). The side
network (``shadow_backbone``, ``shadow_projection``, ``shadow_head``) may start from pretrained weights that the
adapter does not name, so it is carried bit for bit."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("SHADOW", deltas=zeros("shadow_down", "shadow_up", "shadow_update_transform", "shadow_update_gate"),
                carried=("shadow_backbone", "shadow_projection", "shadow_head"))
