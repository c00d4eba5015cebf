"""LoRA (peft ``PeftType.LORA``; DoRA is LoRA with ``use_dora``). Read from peft 0.21.2:
peft/tuners/lora/layer.py ``LoraLayer.update_layer`` (which init runs for ``init_lora_weights``),
``reset_lora_parameters`` (A Kaiming-uniform or Gaussian, B zero; embeddings: A zero, B normal),
``pissa_init``/``olora_init``/``corda_init``/``loftq_init``/``lora_ga_init`` (factors derived from the base,
base replaced by a residual), ``orthogonal_init`` (random A, B with B·A = 0, base untouched), ``mica_init``
(B = the base's minor singular vectors, A zero); peft/tuners/lora/variants.py ``MiCALinearVariant.init`` /
``MiCAEmbeddingVariant.init`` (B frozen), ``KasaLinearVariant.init`` (``lora_diag`` random, base truncated
again on every load), ``DoraLinearVariant`` (``lora_magnitude_vector`` = the base weight's norms); peft/peft_model.py
``PeftModel.save_pretrained`` (``path_initial_model_for_weight_conversion`` saves B·A − B₀·A₀ as an ordinary LoRA
of rank 2r with ``init_lora_weights: true``); saving: peft/tuners/lora/model.py ``LoraModel._get_adapter_state_dict``.

Rule: ``lora_A``/``lora_B``/``lora_embedding_A``/``lora_embedding_B`` and KaSA's ``lora_diag`` are deltas from
θ_init = 0. B (and KaSA's diagonal's partner) starts at zero; A, and both factors under ``init_lora_weights``
False, ``gaussian``, ``orthogonal`` or ``eva`` (A from activation SVDs, B zero, base untouched), start random or
data-derived with a no-op product: ComPEFT's convention makes such a trainable factor a delta from 0 (paper §2,
as for LoRA A). MiCA's frozen B (``lora_B``, ``lora_embedding_B``) is carried. Carried too: DoRA magnitudes,
trainable-token rows (``trainable_token_indices``), ``modules_to_save`` copies, saved base layers and biases.
Refused: PiSSA (``pissa``, ``pissa_niter_N``), OLoRA, CorDA and LoRA-GA, whose initial factors are the base's
principal components and whose base is replaced by a residual (θ_init is a per-tensor function of the base,
not a constant) — peft converts them to an ordinary LoRA; LoftQ, whose base is replaced by a quantised one
(no conversion exists).
"""

from __future__ import annotations

from collections.abc import Mapping

from compeft.families.base import Family, zeros

CONVERTIBLE = ("pissa", "olora", "corda", "lora_ga")


def init_of(config: Mapping) -> str:
    """``init_lora_weights`` as a lower-case string ('true', 'pissa_niter_4', ...)."""
    return str(config.get("init_lora_weights", True)).lower()


def refusal(config: Mapping) -> str | None:
    init = init_of(config)
    if init.startswith(CONVERTIBLE):
        return (f"init_lora_weights={config['init_lora_weights']!r} starts lora_A/lora_B from the base's principal "
                "components and replaces the base by a residual, so no constant θ_init exists; save the adapter with "
                "peft's save_pretrained(..., path_initial_model_for_weight_conversion=DIR), which writes an ordinary "
                "LoRA, and compress that")
    if init == "loftq":
        return ("init_lora_weights='loftq' replaces the base by a quantised one and starts lora_A/lora_B from its "
                "quantisation error; no constant θ_init exists and peft has no conversion to an ordinary LoRA")
    return None


def variant(config: Mapping) -> dict:
    if init_of(config) == "mica":
        return {"lora_B": None, "lora_embedding_B": None}  # frozen minor singular vectors of the base
    return {}


FAMILY = Family(
    "LORA",
    deltas=zeros("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_diag"),
    carried=("lora_magnitude_vector", "trainable_tokens_delta", "base_layer"),
    variant=variant,
    refusal=refusal,
)
