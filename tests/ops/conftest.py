"""Small artifacts for the operations tests: random LoRA-shaped adapters (d not a multiple of 64), related ones
(a shared part plus noise) for high similarities, compressed at chosen densities and codecs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.adapters import lora_config, write_adapter

SHAPES = {"a.lora_A.weight": (3, 37), "a.lora_B.weight": (41, 3), "b.lora_A.weight": (5, 29), "b.lora_B.weight": (19, 5)}


def adapter_tensors(seed: int, *, shared: int | None = None, mix: float = 0.0, dtype=torch.float32) -> dict:
    """Random delta tensors; with ``shared``, (1 − mix)·(that seed's tensors) + mix·(this seed's)."""
    g = torch.Generator().manual_seed(seed)
    own = {name: torch.randn(shape, generator=g) for name, shape in SHAPES.items()}
    if shared is not None:
        base = adapter_tensors(shared)
        own = {n: (1 - mix) * base[n] + mix * own[n] for n in own}
    return {n: t.to(dtype) for n, t in own.items()}


def make_artifact(root: Path, name: str, tensors: dict, *, density: float = 0.3, codec: str = "golomb",
                  config: dict | None = None) -> Path:
    import compeft

    src = write_adapter(root / f"{name}-src", tensors, config or lora_config())
    return Path(compeft.compress(src, root / name, density=density, codec=codec, device="cpu").path)


@pytest.fixture
def artifacts(tmp_path: Path):
    """A factory: artifacts(spec, ...) -> list of artifact paths."""
    def build(*specs: dict) -> list[Path]:
        out = []
        for i, spec in enumerate(specs):
            spec = dict(spec)
            kw = {k: spec.pop(k) for k in ("density", "codec", "config") if k in spec}
            out.append(make_artifact(tmp_path, f"art{i}", adapter_tensors(**spec), **kw))
        return out

    return build
