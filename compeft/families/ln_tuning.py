"""LN tuning (peft ``PeftType.LN_TUNING``). Read: peft/tuners/ln_tuning/layer.py ``LNTuningLayer.update_layer``
(``ln_tuning_layers`` is a deep copy of the base's normalisation layer, trained in place); saving:
peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: none. The trained layers are copies of base weights (θ_init = the base's values, not a constant), so
they can only be carried and nothing would be compressed; the type is refused."""

from __future__ import annotations

from compeft.families.base import Family

FAMILY = Family("LN_TUNING", refused=(
    "ln_tuning_layers are trained copies of the base's normalisation layers (θ_init is the base itself, not a "
    "constant), so nothing can be compressed as a delta"))
