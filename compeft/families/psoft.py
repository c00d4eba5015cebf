"""PSOFT (peft ``PeftType.PSOFT``). Read: peft/tuners/psoft/layer.py ``OrthLayer.reset_parameters`` (with
``psoft_orth`` the Cayley generator ``psoft_R.weight`` is zero, else the matrix itself starts as the identity;
the magnitude vectors ``vector_a``/``vector_b`` are ones) and ``PsoftLayer.update_layer`` (the frozen A/B come from
the base and are rebuilt on load, not saved); saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: ``psoft_R``'s weight is a delta from 0 when ``psoft_orth`` is on (the default); otherwise it starts as an
identity matrix, which is no constant, and is carried. ``vector_a``/``vector_b`` are deltas from 1."""

from __future__ import annotations

from compeft.families.base import Family


def variant(config):
    return {} if config.get("psoft_orth", True) else {"weight": None}


FAMILY = Family("PSOFT", deltas={"vector_a": 1.0, "vector_b": 1.0, "psoft_R": 0.0}, variant=variant)
