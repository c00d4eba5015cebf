"""Deterministic inputs of the golden container fixtures in tests/golden, and their regeneration.

Inputs are generated from fixed numpy seeds (PCG64 streams are stable across numpy versions) and
committed; tests check that generating them again gives the same bytes. Artifacts and expected
tensors are rewritten only by ``COMPEFT_REGEN_GOLDEN=1 pytest tests/core/test_golden.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from tests.adapters import write_adapter

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
REGEN_ENV = "COMPEFT_REGEN_GOLDEN"

# name -> compression options; the input directory is GOLDEN/inputs/<name>
CASES: dict[str, dict] = {
    "lora-golomb": {"density": 0.1, "alpha": 1.0, "codec": "golomb"},
    "lora-mixed-bitmask": {"density": 0.3, "alpha": 1.75, "codec": "bitmask"},
    "ia3-head-golomb": {"density": 0.25, "alpha": 0.5, "codec": "golomb"},
}


def _normal(rng: np.random.Generator, shape, scale: float) -> torch.Tensor:
    return torch.from_numpy((rng.standard_normal(shape) * scale).astype(np.float32))


def input_tensors(name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(adapter_config, tensors) of the golden input ``name``."""
    prefix = "base_model.model.model.layers"
    if name == "lora-golomb":
        rng = np.random.default_rng(20231122)
        tensors = {}
        for layer in range(2):
            for mod in ("q_proj", "v_proj"):
                tensors[f"{prefix}.{layer}.self_attn.{mod}.lora_A.weight"] = _normal(rng, (4, 16), 0.2)
                tensors[f"{prefix}.{layer}.self_attn.{mod}.lora_B.weight"] = _normal(rng, (16, 4), 0.05)
        config = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"],
                  "base_model_name_or_path": "golden/tiny-llama", "task_type": "CAUSAL_LM"}
    elif name == "lora-mixed-bitmask":
        rng = np.random.default_rng(11)
        tensors = {
            "base_model.model.model.embed_tokens.lora_embedding_A": _normal(rng, (4, 32), 0.3).to(torch.float16),
            "base_model.model.model.embed_tokens.lora_embedding_B": _normal(rng, (8, 4), 0.3).to(torch.float16),
            "base_model.model.model.embed_tokens.base_layer.weight": _normal(rng, (32, 8), 1.0).to(torch.float16),
            f"{prefix}.0.mlp.up_proj.lora_A.weight": _normal(rng, (4, 8), 0.2).to(torch.bfloat16),
            f"{prefix}.0.mlp.up_proj.lora_B.weight": _normal(rng, (12, 4), 0.02).to(torch.bfloat16),
        }
        config = {"peft_type": "LORA", "r": 4, "lora_alpha": 4, "target_modules": ["embed_tokens", "up_proj"],
                  "base_model_name_or_path": "golden/tiny-llama", "task_type": "CAUSAL_LM"}
    elif name == "ia3-head-golomb":
        rng = np.random.default_rng(7)
        tensors = {}
        for layer in range(2):
            for mod, shape in (("self_attn.k_proj", (8, 1)), ("self_attn.v_proj", (8, 1)), ("mlp.down_proj", (1, 32))):
                tensors[f"{prefix}.{layer}.{mod}.ia3_l"] = (1.0 + _normal(rng, shape, 0.1)).clamp(0.6, 1.4)
        tensors["base_model.model.score.weight"] = _normal(rng, (3, 16), 0.5).to(torch.bfloat16)
        config = {"peft_type": "IA3", "target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"],
                  "modules_to_save": ["score"], "base_model_name_or_path": "golden/tiny-llama-cls", "task_type": "SEQ_CLS"}
    else:
        raise KeyError(name)
    return config, tensors


def write_input(name: str, out: Path) -> Path:
    config, tensors = input_tensors(name)
    return write_adapter(out, tensors, config)


def regenerate(root: Path = GOLDEN) -> None:
    """Rewrite every golden input, artifact and expected tensor file (explicit regeneration only)."""
    from safetensors.torch import save_file as save

    import compeft

    for sub in ("inputs", "artifacts", "expected"):
        shutil.rmtree(root / sub, ignore_errors=True)
    for name, options in CASES.items():
        src = write_input(name, root / "inputs" / name)
        compeft.compress(src, root / "artifacts" / name, device="cpu", **options)
        tensors = compeft.load(root / "artifacts" / name, device="cpu")
        (root / "expected").mkdir(parents=True, exist_ok=True)
        save({k: v.contiguous() for k, v in sorted(tensors.items())}, str(root / "expected" / f"{name}.safetensors"),
             metadata={"format": "pt"})
