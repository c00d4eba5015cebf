"""GLoRA (peft ``PeftType.GLORA``). Read: peft/tuners/glora/layer.py ``GloraLayer.update_layer`` and the path
classes ``GloraLoraPath`` (``Xu`` Kaiming-uniform, ``Xd`` zero), ``GloraVectorPath`` and ``GloraScalarPath``
(``X`` zero; random without ``init_weights``) and ``GloraEmptyPath`` (a persistent ``zeros`` buffer for a
disabled path); saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: every trainable path of ``glora_A`` … ``glora_E`` is a delta from 0; the ``zeros`` buffers are carried."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("GLORA", deltas=zeros("glora_A", "glora_B", "glora_C", "glora_D", "glora_E"), carried=("zeros",))
