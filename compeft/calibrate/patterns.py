"""The ternary pattern of one density, bound to the live model tensors, and the in-place α update.

The pattern comes from a real artifact compressed at α = 1 (so its bytes are the codec's bytes and its
pattern is exactly what ``decompress`` will reconstruct); for each α the update writes
θ = θ_init + s·t with s = float32(α·σ) into the model through ``artifact.reconstruct_into`` (one fused
multi-tensor write per group of tensors, a handful of launches for hundreds of tensors), so the values and
scores are the artifact's. Patterns are kept on the model's device in the target dtype (t ∈ {-1, 0, 1} is
exact there), or in float32 (−0.0 where t = 0) beside a float32 θ_init where θ_init is not +0.0.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from compeft.artifact import fused_pattern, open_artifact, reconstruct_into, scale_of
from compeft.calibrate.model import LoadedModel
from compeft.codecs import get_codec
from compeft.container import named_payload_errors
from compeft.dtypes import DTYPES_BY_NAME
from compeft.errors import CalibrationError


@dataclass(frozen=True)
class Slot:
    """One delta tensor: the live tensor to write, its pattern, its float32 θ_init (None means 0) and the
    dtype the artifact stores it in (PEFT may hold a bf16 adapter in float32: the value is rounded to
    the artifact's dtype first, as loading the artifact would)."""

    name: str
    target: torch.Tensor = field(repr=False)
    pattern: torch.Tensor = field(repr=False)  # target dtype without θ_init, float32 with it
    init: torch.Tensor | None = field(repr=False)
    stored: torch.dtype | None = None  # None: the target's dtype


@dataclass(frozen=True)
class SlotGroup:
    """Slots updated by one fused multi-tensor write: same device, target dtype, stored dtype and θ_init presence."""

    targets: list[torch.Tensor] = field(repr=False)
    patterns: list[torch.Tensor] = field(repr=False)
    inits: list[torch.Tensor] | None = field(repr=False)
    stored: torch.dtype

    def write(self, s: float) -> None:
        """targets ← θ_init + s·pattern, as the artifact reconstructs it."""
        reconstruct_into(self.targets, self.patterns, s, self.inits, self.stored)


def group_slots(slots: tuple[Slot, ...]) -> tuple[SlotGroup, ...]:
    groups: dict[tuple, list[Slot]] = {}
    for slot in slots:
        stored = slot.stored or slot.target.dtype
        groups.setdefault((slot.target.device, slot.target.dtype, stored, slot.init is None), []).append(slot)
    return tuple(
        SlotGroup([s.target for s in members], [s.pattern for s in members],
                  None if no_init else [s.init for s in members], stored)
        for (_, _, stored, no_init), members in groups.items()
    )


@dataclass(frozen=True)
class DensityPattern:
    """Everything the sweep needs at one density: σ, kept count, the artifact's bytes and the slots."""

    density: float
    sigma: float  # float32 σ as stored in the artifact
    kept: int
    d: int
    bytes_artifact: int
    payload_bytes: int
    slots: tuple[Slot, ...] = field(repr=False)
    build_seconds: float
    groups: tuple[SlotGroup, ...] = field(repr=False, default=())

    def scale(self, alpha: float) -> float:
        """s = float32(α·σ), as compress stores it."""
        return scale_of(alpha, self.sigma)[1]

    def apply(self, alpha: float) -> float:
        """Write θ_init + s·t into every live tensor in place; returns s."""
        s = self.scale(alpha)
        with torch.no_grad():
            for group in self.groups:
                group.write(s)
        return s


InitSource = Callable[[str], torch.Tensor]


def bind_pattern(
    density: float,
    artifact: Path,
    loaded: LoadedModel,
    base_tensor: InitSource | None,
    init_cache: dict[str, torch.Tensor],
    build_seconds: float,
) -> DensityPattern:
    """Decode the artifact's ternary on the model's device and bind each record to its live tensor."""
    opened = open_artifact(artifact)
    doc = opened.document
    with named_payload_errors(opened.path):
        ternary = get_codec(doc.codec).decode(opened.container.payload, doc.d, loaded.device)
    slots = []
    for rec in opened.records.records():
        target = loaded.live.get(rec.name)
        if target is None:
            raise CalibrationError(f"{artifact}: tensor {rec.name} has no counterpart in the loaded model")
        if target.numel() != rec.numel:
            raise CalibrationError(f"{artifact}: tensor {rec.name} has {rec.numel} entries, the model's has {target.numel()}")
        pattern = ternary[rec.offset : rec.offset + rec.numel].reshape(target.shape).to(target.device)
        init: torch.Tensor | None = None
        if base_tensor is not None:  # full fine-tune: θ_init is the base tensor
            if rec.name not in init_cache:
                init_cache[rec.name] = base_tensor(rec.name).to(device=target.device, dtype=torch.float32).reshape(target.shape)
            init = init_cache[rec.name]
        elif rec.theta_init or math.copysign(1.0, rec.theta_init) < 0:  # −0.0 too: its t = 0 entries stay −0.0
            key = f"{rec.name}@{rec.theta_init}"
            if key not in init_cache:
                init_cache[key] = torch.full(target.shape, rec.theta_init, dtype=torch.float32, device=target.device)
            init = init_cache[key]
        pattern = fused_pattern(pattern, target.dtype, init is not None)
        slots.append(Slot(rec.name, target, pattern, init, DTYPES_BY_NAME[rec.dtype]))
    return DensityPattern(
        density=density,
        sigma=doc.sigma,
        kept=doc.kept,
        d=doc.d,
        bytes_artifact=int(opened.container.file_bytes),
        payload_bytes=int(opened.container.payload.numel()),
        slots=tuple(slots),
        build_seconds=build_seconds,
        groups=group_slots(tuple(slots)),
    )


class PatternFactory:
    """Makes the DensityPattern of each density: compress at α = 1 into a scratch dir, decode, bind."""

    def __init__(self, src: Path, loaded: LoadedModel, *, base_dir: Path | None, codec: str, workdir: Path | None = None) -> None:
        self.src = src
        self.loaded = loaded
        self.base_dir = base_dir  # set for full fine-tunes only
        self.codec = codec
        self._tmp = tempfile.TemporaryDirectory(prefix="compeft-calibrate-", dir=workdir)
        self._init_cache: dict[str, torch.Tensor] = {}
        self._base_ckpt = None

    def _base_tensor(self, name: str) -> torch.Tensor:
        from compeft.checkpoint import Checkpoint

        if self._base_ckpt is None:
            self._base_ckpt = Checkpoint(self.base_dir)
        return self._base_ckpt.get(name)

    def pattern(self, density: float) -> DensityPattern:
        """The bound pattern of one density (a fresh α = 1 artifact in the scratch directory)."""
        import compeft

        start = time.perf_counter()
        path = Path(self._tmp.name) / f"k{density:g}"
        compeft.compress(self.src, path, density=density, alpha=1.0, codec=self.codec, device=self.loaded.device,
                         base=self.base_dir, overwrite=True)
        base_tensor = self._base_tensor if self.base_dir is not None else None
        pat = bind_pattern(density, path, self.loaded, base_tensor, self._init_cache, 0.0)
        return replace(pat, build_seconds=time.perf_counter() - start)

    def close(self) -> None:
        """Drop the θ_init tensors and the scratch artifacts."""
        self._init_cache.clear()
        self._tmp.cleanup()
