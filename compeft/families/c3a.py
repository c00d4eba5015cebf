"""C3A (peft ``PeftType.C3A``). Read: peft/tuners/c3a/layer.py ``C3ALayer.update_layer`` and
``reset_c3a_parameters`` (the circular-convolution kernels ``c3a_kernel`` start at zero; ``gaussian``,
``xavier_uniform`` and ``kaiming_uniform`` inits draw them); saving: peft/tuners/tuners_utils.py
``BaseTuner._get_adapter_state_dict``.

Rule: ``c3a_kernel`` is a delta from 0."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("C3A", deltas=zeros("c3a_kernel"))
