"""RandLoRA (peft ``PeftType.RANDLORA``). Read: peft/tuners/randlora/layer.py ``RandLoraLayer.update_layer``
(``randlora_lambda`` normal, ``randlora_gamma`` ones / max(out, in)) and ``reset_randlora_parameters`` (under
``init_weights``: lambda zero, gamma the constant 1 / max(gamma.shape)); peft/tuners/randlora/model.py
``RandLoraModel._get_adapter_state_dict`` (the shared random bases ``randlora_A``/``randlora_B`` when
``save_projection``).

Rule: ``randlora_lambda`` is a delta from 0 and ``randlora_gamma`` from 1 / max(its shape); without
``init_weights`` gamma's constant depends on the layer's width, which the file does not hold, so it is carried.
The shared random bases are carried."""

from __future__ import annotations

from compeft.families.base import Family, init_weights_off


def gamma_init(config, shape) -> float:
    return 1.0 / max(shape)


def variant(config):
    return {"randlora_gamma": None} if init_weights_off(config) else {}


FAMILY = Family("RANDLORA", deltas={"randlora_lambda": 0.0, "randlora_gamma": gamma_init},
                carried=("randlora_A", "randlora_B"), variant=variant)
