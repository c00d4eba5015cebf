"""VeRA (peft ``PeftType.VERA``). Read: peft/tuners/vera/layer.py ``VeraLayer.update_layer`` and
``reset_vera_parameters`` (``vera_lambda_b`` zero, ``vera_lambda_d`` = the config's ``d_initial``; without
``init_weights`` b is ones and d a normal draw); peft/tuners/vera/model.py ``VeraModel._init_vera_A_vera_B`` (the
shared random projections, saved when ``save_projection``) and ``VeraModel._get_adapter_state_dict``.

Rule: ``vera_lambda_b`` is a delta from 0 and ``vera_lambda_d`` from ``d_initial`` (from 1 and, by ComPEFT's
convention for a random init, 0 when ``init_weights`` is false); the shared projections ``vera_A``/``vera_B`` are
carried bit for bit."""

from __future__ import annotations

from compeft.families.base import Family, config_value, init_weights_off


def variant(config):
    return {"vera_lambda_b": 1.0, "vera_lambda_d": 0.0} if init_weights_off(config) else {}


FAMILY = Family("VERA", deltas={"vera_lambda_b": 0.0, "vera_lambda_d": config_value("d_initial", 0.1)},
                carried=("vera_A", "vera_B"), variant=variant)
