"""OSF (peft ``PeftType.OSF``). Read: peft/tuners/osf/layer.py ``OSFLayer.update_layer`` (the trainable
``osf_svd_params`` U_low, S_low, V_low start as the base weight's top singular triplets, computed by
peft/tuners/osf/utils.py ``decompose_weight_matrix``); saving: peft/tuners/tuners_utils.py
``BaseTuner._get_adapter_state_dict``.

Rule: none. Every saved tensor starts as a function of the base (θ_init is the base's SVD, not a constant), so
nothing can be compressed as a delta; the type is refused."""

from __future__ import annotations

from compeft.families.base import Family

FAMILY = Family("OSF", refused=(
    "osf_svd_params start as the base weight's singular vectors and values (θ_init is the base's SVD, not a "
    "constant), so nothing can be compressed as a delta"))
