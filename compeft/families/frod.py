"""FRoD (peft ``PeftType.FROD``). Read: peft/tuners/frod/layer.py ``FrodLayer.update_layer`` (sparse values
``frod_lambda_s_values`` zero under ``init_weights``; ``frod_lambda_l`` starts as the base weight's coefficients in
the shared basis, ``_calculate_frod_u_and_lambda``) and peft/tuners/frod/model.py ``FrodModel._get_adapter_state_dict``
(the shared basis ``frod_V`` and the integer ``frod_s_indices``/``frod_s_size``).

Rule: ``frod_lambda_s_values`` is a delta from 0. ``frod_lambda_l`` starts from the base (no constant θ_init) and is
carried, as DoRA magnitudes are; ``frod_V``, ``frod_s_indices`` and ``frod_s_size`` are carried."""

from __future__ import annotations

from compeft.families.base import Family, zeros

FAMILY = Family("FROD", deltas=zeros("frod_lambda_s_values"),
                carried=("frod_lambda_l", "frod_V", "frod_s_indices", "frod_s_size"))
