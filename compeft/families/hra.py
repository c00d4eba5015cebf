"""HRA (peft ``PeftType.HRA``). Read: peft/tuners/hra/layer.py ``HRALayer.update_layer``, ``reset_hra_parameters``
(Householder vectors ``hra_u`` Kaiming-uniform, pairwise repeated so the product starts at the identity) and
``reset_hra_parameters_random``; saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: ``hra_u`` is a delta from 0 (a random init: ComPEFT's convention)."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("HRA", deltas=zeros("hra_u"))
