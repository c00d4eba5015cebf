"""Small synthetic adapter catalogs for the flow tests (random LoRA tensors; no training)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

LAYERS = ("q_proj", "v_proj")


def lora_adapter(out: Path, seed: int, base: str = "tiny/base", hidden: int = 32, rank: int = 4) -> Path:
    """A LoRA adapter directory with random A/B matrices for two projections of two layers."""
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(2):
        for proj in LAYERS:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{proj}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden, generator=g)
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(hidden, rank, generator=g) * 0.1
    out.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": "LORA", "base_model_name_or_path": base, "r": rank, "lora_alpha": 2 * rank,
              "target_modules": list(LAYERS), "task_type": "CAUSAL_LM"}
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out


def make_catalog(root: Path, n: int = 3, broken: bool = True, base_model_dir: bool = True) -> Path:
    """``n`` LoRA adapters (two bases), plus a broken adapter, a pickle-only adapter and a base model dir."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        lora_adapter(root / f"lora-{i}", seed=i, base="tiny/base-a" if i % 2 == 0 else "tiny/base-b")
    if broken:  # passes the crawl (config + safetensors) but is not a valid safetensors file
        bad = root / "lora-broken"
        bad.mkdir(exist_ok=True)
        (bad / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4,
                                                             "base_model_name_or_path": "tiny/base-a"}))
        (bad / "adapter_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
        pickled = root / "lora-pickle"
        pickled.mkdir(exist_ok=True)
        (pickled / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
        (pickled / "adapter_model.bin").write_bytes(b"not loaded")
    if base_model_dir:
        base = root / "base-model"
        base.mkdir(exist_ok=True)
        (base / "config.json").write_text("{}")
        save_file({"w": torch.zeros(2, 2)}, str(base / "model.safetensors"))
    return root


if __name__ == "__main__":
    import sys

    print(make_catalog(Path(sys.argv[1])))
