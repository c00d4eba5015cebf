"""The adapter families as the tests state them, independently of compeft/families: for every peft type (and some
config variants), the peft config that builds it on a tiny LLaMA, which saved tensors must be deltas and from which
θ_init, and which must be carried. ``const`` components are checked against peft's fresh initialisation; ``random``
ones start random (θ_init = 0 by ComPEFT's convention); ``carried`` names every component carried bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

QV = ["q_proj", "v_proj"]


@dataclass(frozen=True)
class Case:
    name: str
    peft_type: str
    config: dict
    const: dict[str, Any] = field(default_factory=dict)  # component → θ_init (float, or a function of the shape)
    random: tuple[str, ...] = ()
    carried: tuple[str, ...] = ()
    forward: dict = field(default_factory=dict)  # extra forward arguments (task ids)
    prompt: bool = False  # a prompt-learning type (virtual tokens)
    refused: str | None = None  # a needle of the one-line refusal
    no_forward: str | None = None  # why outputs cannot be compared (a peft/transformers incompatibility)

    def theta(self, key: str, shape) -> float | None:
        """θ_init of a saved key under this case's rule (None: carried): a listed carried component wins, else
        the innermost listed delta component."""
        parts = key.split(".")
        if set(parts) & set(self.carried):
            return None
        for part in reversed(parts):
            if part in self.const:
                theta = self.const[part]
                return float(theta(shape)) if callable(theta) else float(theta)
            if part in self.random:
                return 0.0
        return None


def lora(name, random=("lora_A",), const=None, carried=(), **config):
    return Case(name, "LORA", {"target_modules": QV, "r": 4, **config}, const={"lora_B": 0.0} if const is None else const,
                random=random, carried=carried)


CASES = [
    lora("lora"),
    lora("lora-dora", carried=("lora_magnitude_vector",), use_dora=True),
    lora("lora-bias", const={"lora_B": 0.0}, lora_bias=True),
    lora("lora-embedding-head", random=("lora_A", "lora_embedding_B"), const={"lora_B": 0.0, "lora_embedding_A": 0.0},
         carried=("lm_head", "base_layer"), target_modules=["q_proj", "embed_tokens"], modules_to_save=["lm_head"]),
    lora("lora-trainable-tokens", carried=("trainable_tokens_delta",), trainable_token_indices=[1, 2, 3]),
    lora("lora-init-false", random=("lora_A", "lora_B"), const={}, init_lora_weights=False),
    lora("lora-gaussian", init_lora_weights="gaussian"),
    lora("lora-orthogonal", random=("lora_A", "lora_B"), const={}, init_lora_weights="orthogonal"),
    lora("lora-eva", init_lora_weights="eva"),
    lora("lora-mica", random=(), const={"lora_A": 0.0, "lora_embedding_A": 0.0}, carried=("lora_B", "lora_embedding_B", "base_layer"),
         target_modules=["q_proj", "embed_tokens"], init_lora_weights="mica"),
    lora("lora-kasa", random=("lora_A", "lora_diag"), kasa_config={}),
    Case("adalora", "ADALORA", {"target_modules": QV, "init_r": 4, "target_r": 2, "total_step": 10},
         const={"lora_E": 0.0}, random=("lora_A", "lora_B")),
    Case("ia3", "IA3", {"target_modules": ["q_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]},
         const={"ia3_l": 1.0}),
    Case("loha", "LOHA", {"target_modules": QV, "r": 4}, const={"hada_w2_b": 0.0}, random=("hada_w1_a", "hada_w1_b", "hada_w2_a")),
    Case("lokr", "LOKR", {"target_modules": QV, "r": 4}, const={"lokr_w1": 0.0}, random=("lokr_w2",)),
    Case("oft", "OFT", {"target_modules": QV, "oft_block_size": 8, "r": 0}, const={"oft_R": 0.0}),
    Case("boft", "BOFT", {"target_modules": QV, "boft_block_size": 4}, const={"boft_R": 0.0, "boft_s": 1.0}),
    Case("vera", "VERA", {"target_modules": QV, "r": 8, "d_initial": 0.25, "save_projection": True},
         const={"vera_lambda_b": 0.0, "vera_lambda_d": 0.25}, carried=("vera_A", "vera_B")),
    Case("vera-no-projection", "VERA", {"target_modules": QV, "r": 8, "save_projection": False},
         const={"vera_lambda_b": 0.0, "vera_lambda_d": 0.1}),
    Case("pvera", "PVERA", {"target_modules": QV, "r": 8}, const={"pvera_lambda_b": 0.0, "pvera_lambda_d": 0.1},
         carried=("pvera_A", "pvera_B")),
    Case("fourierft", "FOURIERFT", {"target_modules": QV, "n_frequency": 16}, random=("fourierft_spectrum",)),
    Case("waveft", "WAVEFT", {"target_modules": QV, "n_frequency": 64}, const={"waveft_spectrum": 0.0}),
    Case("hra", "HRA", {"target_modules": QV, "r": 4}, random=("hra_u",)),
    Case("miss", "MISS", {"target_modules": QV, "r": 8}, const={"miss_block": 0.0}),
    Case("randlora", "RANDLORA", {"target_modules": QV, "r": 8},
         const={"randlora_lambda": 0.0, "randlora_gamma": lambda shape: 1.0 / max(shape)}, carried=("randlora_A", "randlora_B")),
    Case("road", "ROAD", {"target_modules": QV, "group_size": 8}, const={"road_theta": 0.0, "road_alpha": 1.0}),
    Case("hira", "HIRA", {"target_modules": QV, "r": 4}, const={"hira_B": 0.0}, random=("hira_A",)),
    Case("shira", "SHIRA", {"target_modules": QV, "r": 2}, const={"shira_weight": 0.0}, carried=("shira_indices",)),
    Case("c3a", "C3A", {"target_modules": QV, "block_size": 8}, random=("c3a_kernel",)),
    Case("delora", "DELORA", {"target_modules": QV, "r": 4}, const={"delora_B": 0.0}, random=("delora_A",),
         carried=("delora_lambda", "delora_w_norm")),
    Case("gralora", "GRALORA", {"target_modules": QV, "r": 8}, const={"gralora_B": 0.0}, random=("gralora_A",)),
    Case("tinylora", "TINYLORA", {"target_modules": QV, "save_projection": True}, const={"tinylora_v": 0.0},
         carried=("tinylora_A", "tinylora_B", "tinylora_P")),
    Case("psoft", "PSOFT", {"target_modules": QV, "r": 4}, const={"psoft_R": 0.0, "vector_a": 1.0, "vector_b": 1.0}),
    Case("peanut", "PEANUT", {"target_modules": QV}, const={"peanut_B": 0.0}, random=("peanut_A", "peanut_encoders", "peanut_decoders")),
    Case("shadow", "SHADOW", {"target_modules": QV}, const={"shadow_up": 0.0},
         random=("shadow_down", "shadow_update_transform", "shadow_update_gate"),
         carried=("shadow_backbone", "shadow_projection", "shadow_head"),
         no_forward="peft 0.21.2's Shadow forward passes a ShadowCarrier as past_key_values, which transformers 5.25's LLaMA "
                    "rejects ('ShadowCarrier' object has no attribute 'view'), even on a freshly built model"),
    Case("supertuning", "SUPERTUNING", {"target_modules": QV}, const={"supertuning_values": 0.0}, carried=("supertuning_indices",)),
    Case("deft", "DEFT", {"target_modules": QV}, random=("deft_P",), carried=("deft_R",)),
    Case("beft", "BEFT", {"target_modules": QV}, const={"beft_bias": 0.0}),
    Case("lily", "LILY", {"target_modules": QV}, const={"lily_B": 0.0}, random=("lily_A", "lily_router")),
    Case("poly", "POLY", {"target_modules": QV, "r": 4, "n_tasks": 2}, const={"poly_lora_B": 0.0}, random=("poly_lora_A", "poly_router"),
         forward={"task_ids": [0, 1]}),
    Case("glora", "GLORA", {"target_modules": QV, "r": 4}, random=("glora_A", "glora_B"), carried=("zeros",)),
    Case("frod", "FROD", {"target_modules": QV}, const={"frod_lambda_s_values": 0.0},
         carried=("frod_lambda_l", "frod_V", "frod_s_indices", "frod_s_size")),
    Case("vblora", "VBLORA", {"target_modules": QV, "vector_length": 8, "num_vectors": 16},
         random=("vblora_logits_A", "vblora_logits_B", "vblora_vector_bank")),
    Case("vblora-topk", "VBLORA", {"target_modules": QV, "vector_length": 8, "num_vectors": 16, "save_only_topk_weights": True},
         random=("vblora_vector_bank",), carried=("vblora_logits_A_topk_indices", "vblora_logits_B_topk_indices",
                                                   "vblora_logits_A_topk_weights", "vblora_logits_B_topk_weights")),
    Case("unilora", "UNILORA", {"target_modules": QV}, random=("unilora_theta_d",)),
    Case("adamss", "ADAMSS", {"target_modules": QV, "r": 8}, const={"adamss_B": 0.0}, random=("adamss_A",), carried=("adamss_newB",)),
    Case("adaption-prompt", "ADAPTION_PROMPT", {"task_type": "CAUSAL_LM", "adapter_len": 4, "adapter_layers": 1},
         const={"adaption_gate": 0.0}, random=("adaption_prompt",)),
    Case("prompt-tuning", "PROMPT_TUNING", {"task_type": "CAUSAL_LM", "num_virtual_tokens": 4}, random=("prompt_embeddings",),
         prompt=True),
    Case("multitask-prompt-tuning", "MULTITASK_PROMPT_TUNING", {"task_type": "CAUSAL_LM", "num_virtual_tokens": 4, "num_tasks": 2},
         random=("prompt_embeddings", "prefix_task_cols", "prefix_task_rows"), forward={"task_ids": [0, 1]}, prompt=True),
    Case("p-tuning", "P_TUNING", {"task_type": "CAUSAL_LM", "num_virtual_tokens": 4, "encoder_hidden_size": 16},
         random=("prompt_embeddings",), prompt=True),
    Case("prefix-tuning", "PREFIX_TUNING", {"task_type": "CAUSAL_LM", "num_virtual_tokens": 4}, random=("prompt_embeddings",),
         prompt=True),
    Case("cpt", "CPT", {"task_type": "CAUSAL_LM", "cpt_token_ids": [5, 6, 7, 8], "cpt_mask": [1, 1, 1, 1],
                        "cpt_tokens_type_mask": [1, 2, 2, 3]}, random=("prompt_embeddings",), prompt=True),
    Case("cartridge", "CARTRIDGE", {"task_type": "CAUSAL_LM", "num_virtual_tokens": 4}, random=("prompt_embeddings",), prompt=True),
    # refused: no constant θ_init for anything they save, or nothing saved
    Case("xlora", "XLORA", {}, refused="experts"),
    Case("trainable-tokens", "TRAINABLE_TOKENS", {"target_modules": ["embed_tokens"], "token_indices": [1, 2, 3]},
         refused="trainable_tokens_delta"),
    Case("ln-tuning", "LN_TUNING", {"target_modules": ["input_layernorm"]}, refused="ln_tuning_layers"),
    Case("osf", "OSF", {"target_modules": QV}, refused="singular vectors"),
    # LoRA inits that derive the factors from the base and replace it by a residual
    Case("lora-pissa", "LORA", {"target_modules": QV, "r": 4, "init_lora_weights": "pissa"},
         refused="path_initial_model_for_weight_conversion"),
    Case("lora-pissa-niter", "LORA", {"target_modules": QV, "r": 4, "init_lora_weights": "pissa_niter_2"},
         refused="path_initial_model_for_weight_conversion"),
    Case("lora-olora", "LORA", {"target_modules": QV, "r": 4, "init_lora_weights": "olora"},
         refused="path_initial_model_for_weight_conversion"),
]
"""Every case builds with peft; the refused ones are also checked with configs peft writes but that need data or
quantisation to build (CorDA, LoRA-GA, LoftQ), by editing a LoRA's config (``EDITED_REFUSALS``)."""

EDITED_REFUSALS = {"corda": "path_initial_model_for_weight_conversion", "lora_ga": "path_initial_model_for_weight_conversion",
                   "loftq": "quantis"}
