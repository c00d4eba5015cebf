"""Adapter families: for each peft type (and the diffusers LoRA file), which saved tensors are deltas and from
which θ_init, which are carried bit for bit, and which configurations are refused. A plain-data registry, one
module per family (as peft has one module per tuner); docs/families.md tabulates it.

The family is the one place that classifies tensors: ``family_of`` picks it from the adapter config's
``peft_type``, ``Family.rule`` applies the config, and ``theta_inits`` names every delta tensor with its θ_init.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from compeft.families import (
    adalora,
    adamss,
    adaption_prompt,
    beft,
    boft,
    c3a,
    cartridge,
    cpt,
    deft,
    delora,
    fourierft,
    frod,
    glora,
    gralora,
    hira,
    hra,
    ia3,
    lily,
    ln_tuning,
    loha,
    lokr,
    lora,
    miss,
    multitask_prompt_tuning,
    oft,
    osf,
    p_tuning,
    peanut,
    poly,
    prefix_tuning,
    prompt_tuning,
    psoft,
    pvera,
    randlora,
    road,
    shadow,
    shira,
    supertuning,
    tinylora,
    trainable_tokens,
    unilora,
    vblora,
    vera,
    waveft,
    xlora,
)
from compeft.families.base import Family, Rule

FAMILIES: Mapping[str, Family] = {
    m.FAMILY.name: m.FAMILY
    for m in (
        prompt_tuning, multitask_prompt_tuning, p_tuning, prefix_tuning, lora, adalora, adamss, boft, adaption_prompt,
        ia3, beft, lily, loha, lokr, oft, poly, ln_tuning, vera, frod, pvera, fourierft, glora, xlora, hra, vblora,
        unilora, cpt, miss, randlora, road, trainable_tokens, hira, shira, c3a, waveft, osf, delora, gralora,
        cartridge, tinylora, psoft, peanut, shadow, supertuning, deft,
    )
}
"""Every peft type of peft 0.21.2, by its ``PeftType`` value."""

SUPPORTED_PEFT_TYPES = tuple(name for name, f in FAMILIES.items() if not f.refused)


def family_of(config: Mapping) -> Family | None:
    """The family of a peft adapter config (by ``peft_type``, upper-cased), or None for a type peft 0.21 lacks."""
    return FAMILIES.get(str(config.get("peft_type", "")).upper())


def theta_inits(rule: Rule, tensors: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Every delta tensor's name → θ_init under ``rule``, in sorted name order (the rest are carried)."""
    thetas = {}
    for name in sorted(tensors):
        theta = rule.theta_init(name, tuple(tensors[name].shape))
        if theta is not None:
            thetas[name] = theta
    return thetas
