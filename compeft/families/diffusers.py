"""diffusers LoRA files (``pytorch_lora_weights.safetensors``, or a lone kohya ``*.safetensors``; no adapter
config). Read: diffusers 0.42 diffusers/loaders/lora_base.py ``LoraBaseMixin.write_lora_layers`` (PEFT-style
keys under ``unet.``/``transformer.``/``text_encoder.`` prefixes, the LoRA config as safetensors metadata
``lora_adapter_metadata``) and diffusers/loaders/lora_conversion_utils.py (kohya keys
``lora_unet_*``/``lora_te*_*`` with ``.lora_down.weight``, ``.lora_up.weight``, ``.lora_mid.weight``, ``.alpha``;
LyCORIS ``hada_*`` (LoHa), ``lokr_*`` (LoKr), ``diff``/``diff_b`` (full weight differences) and ``dora_scale``).
The factors start as in peft's LoRA/LoHa/LoKr (peft/tuners/lora/layer.py ``reset_lora_parameters``,
peft/tuners/loha/layer.py and peft/tuners/lokr/layer.py ``reset_adapter_parameters``): zero or random.

Rule: every LoRA, LoHa and LoKr factor and every LyCORIS weight difference is a delta from 0 (random factors by
ComPEFT's convention, paper §2). Carried bit for bit: the ``alpha`` scalars, DoRA scales and magnitudes, and
every other tensor (whole trained layers some trainers save). The file's safetensors metadata is kept and written
back, so diffusers' ``load_lora_weights`` reads the same LoRA config."""

from __future__ import annotations

from collections.abc import Iterable

from compeft.families.base import Family, zeros

LORA = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_down", "lora_up", "lora_mid")
LOHA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
LOKR = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")
DORA = ("dora_scale", "lora_magnitude_vector")

FAMILY = Family("DIFFUSERS", deltas=zeros(*LORA, *LOHA, *LOKR, "diff", "diff_b"), carried=("alpha", *DORA))


def kind(names: Iterable[str]) -> str:
    """What a diffusers file holds, as the registry records adapter kinds: LORA, DORA, LOHA or LOKR."""
    parts = {part for name in names for part in name.split(".")}
    if parts.intersection(LOHA):
        return "LOHA"
    if parts.intersection(LOKR):
        return "LOKR"
    return "DORA" if parts.intersection(DORA) else "LORA"
