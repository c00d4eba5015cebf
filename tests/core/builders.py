"""Tiny, seeded models and PEFT adapters built locally with real transformers + peft (no downloads).

Every builder is deterministic (fixed seeds) and small enough that the whole set builds in seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from tests.adapters import write_adapter

VOCAB = 64


@dataclass(frozen=True)
class BaseSpec:
    name: str
    kind: str  # "llama", "llama-cls", "gpt2"


@dataclass(frozen=True)
class AdapterCase:
    name: str
    path: Path
    base: str  # key into the base model directories
    peft_type: str


def llama_config(**kw):
    from transformers import LlamaConfig

    args = dict(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    args.update(kw)
    return LlamaConfig(**args)


def build_base(kind: str, out: Path) -> Path:
    """Save a tiny randomly initialised base model of ``kind`` into ``out``."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaForCausalLM,
        LlamaForSequenceClassification,
    )

    torch.manual_seed(1000)
    if kind == "llama":
        model = LlamaForCausalLM(llama_config())
    elif kind == "llama-cls":
        model = LlamaForSequenceClassification(llama_config(num_labels=3))
    elif kind == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=32, bos_token_id=1, eos_token_id=2)
        )
    elif kind == "bert-cls":
        model = BertForSequenceClassification(
            BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                       max_position_embeddings=32, num_labels=2, pad_token_id=0)
        )
    else:
        raise ValueError(kind)
    model.save_pretrained(out)
    return out


def load_base(kind: str, path: Path):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification if kind in ("llama-cls", "bert-cls") else AutoModelForCausalLM
    model = cls.from_pretrained(path, dtype=torch.float32)
    model.eval()
    return model


def _perturb_(model, seed: int) -> None:
    """Make every adapter parameter non-trivial and seeded (θ_init + noise)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ia3_l" in name:
                noise = torch.randn(p.shape, generator=gen) * 0.15
                p.copy_((1.0 + noise).clamp(0.6, 1.4))  # stays in [0.5, 2]: θ − 1 is exact in float32
            elif "lora_" in name and "magnitude" not in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
            elif "lora_magnitude_vector" in name:
                p.mul_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif "modules_to_save" in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)


def build_adapter(name: str, base_dir: Path, base_kind: str, out: Path) -> AdapterCase:
    """Build the adapter ``name`` on the base model in ``base_dir`` and save it to ``out``."""
    from peft import IA3Config, LoraConfig, get_peft_model

    model = load_base(base_kind, base_dir)
    lora = dict(r=4, lora_alpha=8, init_lora_weights=False)
    dtype = None
    save_kw = {}
    if name == "lora-all-linear":
        cfg = LoraConfig(target_modules="all-linear", **lora)
    elif name in ("lora-fp16", "lora-bf16"):
        cfg = LoraConfig(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], **lora)
        dtype = torch.float16 if name == "lora-fp16" else torch.bfloat16
    elif name == "lora-patterns":
        cfg = LoraConfig(
            target_modules=["q_proj", "v_proj", "down_proj", "up_proj"],
            rank_pattern={"q_proj": 2, "down_proj": 6},
            alpha_pattern={"v_proj": 32, "up_proj": 3},
            **lora,
        )
    elif name == "gpt2-conv1d":
        cfg = LoraConfig(target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True, **lora)
    elif name == "lora-embedding":
        cfg = LoraConfig(target_modules=["embed_tokens", "q_proj", "v_proj"], **lora)
        save_kw = {"save_embedding_layers": True}
    elif name == "dora":
        cfg = LoraConfig(target_modules=["q_proj", "v_proj", "up_proj"], use_dora=True, **lora)
    elif name == "ia3":
        cfg = IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"])
    elif name == "seqcls-head":
        cfg = LoraConfig(task_type="SEQ_CLS", target_modules=["q_proj", "v_proj"], **lora)
    elif name == "seqcls-head-bf16-lora":
        cfg = LoraConfig(task_type="SEQ_CLS", target_modules=["q_proj", "v_proj"], **lora)
    elif name == "bert-classifier":
        cfg = LoraConfig(task_type="SEQ_CLS", target_modules=["query", "value"], **lora)
    else:
        raise ValueError(name)
    torch.manual_seed(7)
    pm = get_peft_model(model, cfg)
    _perturb_(pm, seed=sum(map(ord, name)))
    if dtype is not None:
        pm.to(dtype)
    if name == "seqcls-head-bf16-lora":
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_" in n:
                    p.data = p.data.to(torch.bfloat16)
    pm.save_pretrained(out, **save_kw)
    peft_type = json.loads((out / "adapter_config.json").read_text())["peft_type"]
    return AdapterCase(name, out, base_kind, peft_type)


ADAPTER_BASES = {
    "lora-all-linear": "llama",
    "lora-fp16": "llama",
    "lora-bf16": "llama",
    "lora-patterns": "llama",
    "gpt2-conv1d": "gpt2",
    "lora-embedding": "llama",
    "dora": "llama",
    "ia3": "llama",
    "seqcls-head": "llama-cls",
    "seqcls-head-bf16-lora": "llama-cls",
    "bert-classifier": "bert-cls",
}


def synthetic_adapter(out: Path, tensors: dict[str, torch.Tensor], peft_type: str = "LORA", extra: dict | None = None) -> Path:
    """An adapter directory from hand-made tensors (only the file layout matters to compress)."""
    return write_adapter(out, tensors, {"peft_type": peft_type, "base_model_name_or_path": "tiny/base", "r": 4, **(extra or {})})
