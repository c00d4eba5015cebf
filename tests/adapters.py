"""The tests' one adapter builder: an adapter directory from tensors and a config (written by the library's own
``compeft.adapters.write_adapter``), and small random LoRA adapters. The peft-built adapters of tests/core
(builders.py) and the golden inputs (golden_gen.py) are written through it too."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from compeft.adapters import write_adapter as write_adapter_dir

LAYERS = ("q_proj", "v_proj")


def write_adapter(out: Path, tensors: Mapping[str, torch.Tensor], config: Mapping) -> Path:
    """``out`` as a PEFT adapter directory: ``config`` as sorted, indented JSON and the tensors as safetensors."""
    write_adapter_dir(Path(out), (json.dumps(dict(config), indent=2, sort_keys=True) + "\n").encode(), tensors)
    return Path(out)


def lora_config(base: str | None = "tiny/base", rank: int = 4, peft_type: str = "LORA", **extra) -> dict:
    return {"peft_type": peft_type, "base_model_name_or_path": base, "r": rank, "lora_alpha": 2 * rank,
            "target_modules": list(LAYERS), "task_type": "CAUSAL_LM", **extra}


def lora_adapter(out: Path, seed: int = 0, base: str | None = "tiny/base", hidden: int = 32, rank: int = 4,
                 peft_type: str = "LORA") -> Path:
    """A LoRA adapter with random A/B matrices for two projections of two layers (B ten times smaller)."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(2):
        for proj in LAYERS:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden, generator=g)
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(hidden, rank, generator=g) * 0.1
    return write_adapter(out, tensors, lora_config(base, rank, peft_type))
