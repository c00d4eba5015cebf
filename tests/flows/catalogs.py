"""Small synthetic adapter catalogs for the flow tests (random LoRA adapters of tests/adapters.py; no training)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.adapters import lora_adapter


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
