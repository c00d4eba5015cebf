"""DEFT (peft ``PeftType.DEFT``). Read: peft/tuners/deft/layer.py ``DeftLayer.update_layer`` and
``reset_deft_parameters`` (the subspace ``deft_P`` normal with std 0.02; under ``init_weights`` the injection
``deft_R`` is set to rightᵀ·W, a function of the base that makes the update zero, else a normal draw; no R with
``deft_para``); saving: peft/tuners/tuners_utils.py ``BaseTuner._get_adapter_state_dict``.

Rule: ``deft_P`` is a delta from 0 (ComPEFT's convention for a random init). ``deft_R`` starts from the base under
``init_weights`` (the default) and is carried; without it, it is a random init and a delta from 0."""

from __future__ import annotations

from compeft.families.base import Family, init_weights_off


def variant(config):
    return {"deft_R": 0.0} if init_weights_off(config) else {}


FAMILY = Family("DEFT", deltas={"deft_P": 0.0}, carried=("deft_R",), variant=variant)
