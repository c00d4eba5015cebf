"""Synthetic LoRA r=64 adapters with real LLaMA shapes and trained-adapter-like statistics (no downloads)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

RANK = 64


@dataclass(frozen=True)
class Shape:
    """A LLaMA size: hidden width, MLP width, layer count."""

    name: str
    hidden: int
    intermediate: int
    layers: int

    def modules(self) -> list[tuple[str, int, int]]:
        """(module path, in_features, out_features) of every linear layer LoRA targets (all-linear)."""
        h, f = self.hidden, self.intermediate
        per_layer = [
            ("self_attn.q_proj", h, h),
            ("self_attn.k_proj", h, h),
            ("self_attn.v_proj", h, h),
            ("self_attn.o_proj", h, h),
            ("mlp.gate_proj", h, f),
            ("mlp.up_proj", h, f),
            ("mlp.down_proj", f, h),
        ]
        return [(f"base_model.model.model.layers.{i}.{m}", fi, fo) for i in range(self.layers) for m, fi, fo in per_layer]

    @property
    def params(self) -> int:
        return sum(RANK * (fi + fo) for _, fi, fo in self.modules())


SHAPES = {
    "tiny": Shape("tiny", 256, 688, 2),
    "7B": Shape("7B", 4096, 11008, 32),
    "13B": Shape("13B", 5120, 13824, 40),
    "33B": Shape("33B", 6656, 17920, 60),
    "65B": Shape("65B", 8192, 22016, 80),
}


def lora_tensors(shape: Shape, *, seed: int = 0, device: str | torch.device = "cpu", dtype=torch.bfloat16,
                 rank: int = RANK) -> dict[str, torch.Tensor]:
    """LoRA A like a trained one (Kaiming-uniform init, bound 1/√in, plus Gaussian updates) and B small
    and heavy-tailed (Student-t, 3 degrees of freedom), so a global top-k keeps A and B unevenly."""
    g = torch.Generator(device=device).manual_seed(seed)
    out = {}
    for name, fan_in, fan_out in shape.modules():
        bound = fan_in**-0.5
        a = torch.rand(rank, fan_in, generator=g, device=device).mul_(2 * bound).sub_(bound)
        a.add_(torch.randn(rank, fan_in, generator=g, device=device).mul_(0.25 * bound))
        # Student-t(3) = N / sqrt(chi2_3 / 3); chi2_3 as a sum of three squared normals
        z = torch.randn(fan_out, rank, generator=g, device=device)
        chi = torch.randn(3, fan_out, rank, generator=g, device=device).square_().sum(0).div_(3).sqrt_()
        b = z.div_(chi).mul_(0.15 * bound)
        out[f"{name}.lora_A.weight"] = a.to(dtype)
        out[f"{name}.lora_B.weight"] = b.to(dtype)
    return out


def write_adapter_dir(path: Path, tensors: dict[str, torch.Tensor], shape: Shape, rank: int = RANK) -> Path:
    """A PEFT adapter directory (adapter_config.json + adapter_model.safetensors), written by compeft's own writer."""
    from compeft.adapters import write_adapter

    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 16,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "base_model_name_or_path": f"synthetic/llama-{shape.name}",
        "task_type": "CAUSAL_LM",
    }
    write_adapter(path, json.dumps(config, indent=2).encode(), {k: v.cpu() for k, v in tensors.items()})
    return path


def compressed_bytes(shape: str, density: float, device: str | torch.device = "cuda") -> torch.Tensor:
    """A compressed synthetic adapter of ``shape`` (made and compressed on ``device``), as pinned host bytes."""
    import tempfile

    from compeft import api
    from compeft.container import container_path, read_bytes

    with tempfile.TemporaryDirectory() as tmp:
        tensors = {k: v.cpu() for k, v in lora_tensors(SHAPES[shape], seed=0, device=device).items()}
        src = write_adapter_dir(Path(tmp) / "a", tensors, SHAPES[shape])
        del tensors
        api.compress(src, Path(tmp) / "art", density=density, device=device)
        return read_bytes(container_path(Path(tmp) / "art"), pin=True)
