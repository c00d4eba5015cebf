"""PVeRA (peft ``PeftType.PVERA``). Read: peft/tuners/pvera/layer.py ``PveraLayer.update_layer`` and
``reset_pvera_parameters`` (``pvera_lambda_b`` zero, ``pvera_lambda_d`` = ``d_initial``; ones and a normal draw
without ``init_weights``); peft/tuners/pvera/model.py ``PveraModel._get_adapter_state_dict`` (the shared random
projections ``pvera_A``/``pvera_B``, saved when ``save_projection``).

Rule: as VeRA: ``pvera_lambda_b`` a delta from 0, ``pvera_lambda_d`` from ``d_initial`` (1 and 0 when
``init_weights`` is false); the shared projections are carried."""

from __future__ import annotations

from compeft.families.base import Family, config_value, init_weights_off


def variant(config):
    return {"pvera_lambda_b": 1.0, "pvera_lambda_d": 0.0} if init_weights_off(config) else {}


FAMILY = Family("PVERA", deltas={"pvera_lambda_b": 0.0, "pvera_lambda_d": config_value("d_initial", 0.1)},
                carried=("pvera_A", "pvera_B"), variant=variant)
