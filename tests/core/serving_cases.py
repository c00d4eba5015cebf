"""Serving test cases: for an adapter family of the workshop, same-structure variants, their artifacts and the
reference outputs of ``PeftModel.from_pretrained(base, decompressed_dir)``."""

from __future__ import annotations

import json
from pathlib import Path

import builders
import torch
from safetensors.torch import load_file

from compeft import api
from tests.adapters import write_adapter

INPUT = torch.tensor([[1, 5, 9, 14, 3, 7, 22, 40], [2, 8, 31, 6, 11, 4, 19, 0]])


def variant(src: Path, out: Path, seed: int, **config_changes) -> Path:
    """An adapter of ``src``'s structure with other values (and ``config_changes`` in its config)."""
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, t in load_file(src / "adapter_model.safetensors").items():
        noise = torch.randn(t.shape, generator=gen).to(t.dtype)
        if "ia3_l" in name:
            t = (t.float() + 0.1 * noise.float()).clamp(0.6, 1.4).to(t.dtype)
        elif "magnitude" in name:
            t = t * (1 + 0.05 * noise)
        else:
            t = t + 0.2 * noise
        tensors[name] = t.contiguous()
    config = {**json.loads((src / "adapter_config.json").read_text()), **config_changes}
    return write_adapter(out, tensors, config)


class Case:
    """One family: its base model directory and adapters made on demand (dir, artifact, decompressed)."""

    def __init__(self, root: Path, workshop, name: str) -> None:
        self.root, self.name = root, name
        self.case = workshop.adapter(name)
        self.kind = self.case.base
        self.base_dir = workshop.base(self.kind)
        self._made: dict[str, tuple[Path, Path, Path]] = {}

    def base(self):
        return builders.load_base(self.kind, self.base_dir)

    def adapter(self, key: str, seed: int | None = None, rank: int | None = None,
                **config_changes) -> tuple[Path, Path, Path]:
        """(adapter dir, artifact dir, decompressed dir) of the variant ``key`` (LoRA factors cut to ``rank``)."""
        if key not in self._made:
            src = self.case.path if seed is None else variant(self.case.path, self.root / f"{key}-src", seed, **config_changes)
            if rank is not None:
                truncate_rank(src, rank)
            art, dec = self.root / f"{key}-art", self.root / f"{key}-dec"
            api.compress(src, art, density=0.5)
            api.decompress(art, dec)
            self._made[key] = (src, art, dec)
        return self._made[key]

    def reference(self, key: str, device: str = "cpu") -> torch.Tensor:
        """What the model computes after ``PeftModel.from_pretrained(base, decompressed_dir)``."""
        from peft import PeftModel

        model = PeftModel.from_pretrained(self.base().to(device), str(self.adapter(key)[2])).eval()
        return outputs(model, device)

    def live(self, key: str, device: str = "cpu"):
        """A live model holding the decompressed adapter ``key`` (as a server would have it)."""
        from peft import PeftModel

        return PeftModel.from_pretrained(self.base().to(device), str(self.adapter(key)[2])).eval()


def outputs(model, device: str = "cpu") -> torch.Tensor:
    with torch.no_grad():
        return model(INPUT.to(device)).logits


def truncate_rank(directory: Path, rank: int) -> None:
    """Cut an adapter's LoRA factors to ``rank`` (A: rows, B: columns) and set its config's r, in place."""
    from safetensors.torch import save_file

    path = directory / "adapter_model.safetensors"
    tensors = load_file(path)
    for name, t in tensors.items():
        if "lora_A" in name:
            tensors[name] = t[:rank].contiguous()
        elif "lora_B" in name:
            tensors[name] = t[:, :rank].contiguous()
    save_file(tensors, path)
    config = json.loads((directory / "adapter_config.json").read_text())
    (directory / "adapter_config.json").write_text(json.dumps({**config, "r": rank}, indent=2, sort_keys=True) + "\n")
