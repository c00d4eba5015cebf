"""Merging compressed artifacts in the adapter's parameter space (paper §3.7, Table 6), as the paper and peft's
non-SVD methods do for LoRA factors: each saved tensor (lora_A, lora_B, ia3_l, ...) is merged entry by entry.

Over the inputs' τ̂_i = s_i·t_i with weights w_i:

- **task arithmetic**: τ = λ·Σ w_i τ̂_i.
- **TIES** (Yadav et al. 2023; trimming is what ComPEFT already did): elect γ = sign(Σ w_i τ̂_i) per entry; the
  disjoint mean τ_j = λ·Σ_{i: sign(τ̂_ij) = γ_j} w_i τ̂_ij / #{i: sign(τ̂_ij) = γ_j, τ̂_ij ≠ 0} (0 where none agrees).
  The elected signs become two bit planes, each input's agreement with them is a word operation on its planes
  (agree_i = P_i & Γ₊ | N_i & Γ₋), and the counts and sums are read from the agreement planes.

Methods are configured instances (``MERGE_METHODS``: name → class, built with λ), mergekit-style. The merged τ
is written as a standard PEFT adapter (θ = θ_init + τ in each tensor's dtype, ``artifact.reconstruct``) or
compressed again into an artifact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Protocol

import torch

from compeft.artifact import ArtifactInfo, adapter_config_bytes, reconstruct, scale_of, write_artifact
from compeft.atomic import atomic_directory, check_destination
from compeft.codecs import get_codec
from compeft.config import MergeConfig
from compeft.container import FILENAME
from compeft.devices import resolve_device
from compeft.document import CarriedRecord, Document
from compeft.dtypes import DTYPES_BY_NAME, dtype_name
from compeft.errors import InputError, OptionError
from compeft.hashing import sha256_file
from compeft.ops.files import planes_of
from compeft.ops.planes import WORD_BITS, TernaryPlanes, check_same_layout, pack_words, unpack_words
from compeft.sparsify import ternarize
from compeft.version import __version__

CHUNK_WORDS = 1 << 18  # 16M entries per step: bounds the dense temporaries of a 7B-shape merge


class MergeMethod(Protocol):
    """A configured merge method: the merged float32 τ of the inputs' planes and weights."""

    name: ClassVar[str]

    def merge(self, planes: Sequence[TernaryPlanes], weights: Sequence[float]) -> torch.Tensor:
        ...


def _chunks(words: int):
    for start in range(0, words, CHUNK_WORDS):
        yield start, min(words, start + CHUNK_WORDS)


def _signs(planes: TernaryPlanes, w0: int, w1: int, d: int) -> torch.Tensor:
    """t over the entries of words [w0, w1) as float32."""
    n = min(d, w1 * WORD_BITS) - w0 * WORD_BITS
    support = unpack_words(planes.support[w0:w1], n).to(torch.float32)
    return support - 2 * unpack_words(planes.negative[w0:w1], n).to(torch.float32)


@dataclass(frozen=True)
class TaskArithmetic:
    """τ = λ·Σ w_i s_i t_i."""

    name: ClassVar[str] = "task_arithmetic"
    lam: float = 1.0

    def merge(self, planes: Sequence[TernaryPlanes], weights: Sequence[float]) -> torch.Tensor:
        d, device = planes[0].d, planes[0].device
        tau = torch.zeros(d, dtype=torch.float32, device=device)
        for w0, w1 in _chunks(planes[0].support.numel()):
            out = tau[w0 * WORD_BITS : w1 * WORD_BITS]
            for p, w in zip(planes, weights):
                out.add_(_signs(p, w0, w1, d), alpha=w * p.scale)
            out.mul_(self.lam)
        return tau


@dataclass(frozen=True)
class Ties:
    """Elect a sign per entry by the weighted sum, then the disjoint mean of the inputs that agree, times λ."""

    name: ClassVar[str] = "ties"
    lam: float = 1.0

    def merge(self, planes: Sequence[TernaryPlanes], weights: Sequence[float]) -> torch.Tensor:
        d, device = planes[0].d, planes[0].device
        tau = torch.zeros(d, dtype=torch.float32, device=device)
        coefficients = [w * p.scale for p, w in zip(planes, weights)]
        for w0, w1 in _chunks(planes[0].support.numel()):
            out = tau[w0 * WORD_BITS : w1 * WORD_BITS]
            n = out.numel()
            elected = torch.zeros(n, dtype=torch.float32, device=device)
            for p, c in zip(planes, coefficients):  # elect: sign of Σ w_i τ̂_i
                elected.add_(_signs(p, w0, w1, d), alpha=c)
            up, down = pack_words(elected > 0), pack_words(elected < 0)
            count = torch.zeros(n, dtype=torch.float32, device=device)
            for p, c in zip(planes, coefficients):  # agree: the input's sign equals the elected one
                s, neg = p.support[w0:w1], p.negative[w0:w1]
                agree = unpack_words((s & ~neg & up) | (neg & down), n).to(torch.float32)
                count.add_(agree)
                out.add_(agree, alpha=c)
            sign = unpack_words(up, n).to(torch.float32) - unpack_words(down, n).to(torch.float32)
            out.mul_(sign).div_(count.clamp_(min=1.0)).mul_(self.lam)
        return tau


MERGE_METHODS: dict[str, type] = {TaskArithmetic.name: TaskArithmetic, Ties.name: Ties}


def merge_method(config: MergeConfig) -> MergeMethod:
    """The configured method of a MergeConfig."""
    return MERGE_METHODS[config.method](lam=config.lam)


@dataclass(frozen=True)
class MergeInput:
    """One input of a merge or composition, as its lineage records it."""

    path: str
    sha256: str
    weight: float


@dataclass(frozen=True)
class MergeResult:
    """What a merge wrote: the output directory and form, the lineage, and the merged vector's support."""

    path: str
    to: str
    method: str
    lam: float
    inputs: tuple[MergeInput, ...]
    d: int
    support: int
    artifact: ArtifactInfo | None = field(default=None, repr=False)

    def summary(self) -> str:
        """The one line ``compeft merge`` prints."""
        what = (f"{self.method} of {len(self.inputs)} artifacts (λ={self.lam:g}); merged support "
                f"{self.support:,}/{self.d:,}")
        if self.artifact is not None:
            return f"{what}; {self.artifact.summary()}"
        return f"{self.path}: PEFT adapter, {what}"

    def lineage(self) -> dict:
        """The operation as recorded in model cards, artifact documents and the registry."""
        return {"operation": "merge", "method": self.method, "lam": self.lam,
                "inputs": [asdict(i) for i in self.inputs]}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["artifact"] = self.artifact.to_dict() if self.artifact else None
        return data


def open_inputs(artifacts: Sequence[str | Path | TernaryPlanes], device: torch.device,
                what: str = "merge") -> list[TernaryPlanes]:
    """The inputs' planes on ``device``: adapter artifacts of one record layout carrying identical tensors."""
    if len(artifacts) < 1:
        raise InputError(f"{what} needs at least one artifact")
    planes = planes_of(artifacts, device)
    for p in planes:
        if p.kind != "adapter":
            raise InputError(f"{p.label}: a full fine-tune residual cannot be {what}d here (adapter artifacts only)")
        if p.source.get("layout") not in (None, "peft"):
            raise InputError(f"{p.label}: a {p.source.get('layout')} artifact; {what} writes PEFT adapters from "
                             "PEFT-layout artifacts only")
    check_same_layout(planes)
    first = planes[0]
    if first.directory is None:
        raise InputError(f"{first.label}: the first input must be an artifact directory (its adapter_config.json is "
                         f"the {what}'s config)")
    for other in planes[1:]:
        if set(other.carried) != set(first.carried):
            raise InputError(f"{other.label}: carries tensors {sorted(other.carried)}, {first.label} carries "
                             f"{sorted(first.carried)}")
        for name, tensor in first.carried.items():
            if not torch.equal(tensor, other.carried[name]):
                raise InputError(f"{other.label}: carried tensor {name!r} differs from {first.label}'s "
                                 f"(carried tensors are not merged; they must be identical)")
    return planes


def weights_for(config_weights: Sequence[float] | None, n: int) -> tuple[float, ...]:
    """The configured weights, one per input (default 1 each)."""
    weights = tuple(config_weights) if config_weights is not None else (1.0,) * n
    if len(weights) != n:
        raise OptionError(f"--weights has {len(weights)} value(s) for {n} input(s)", "weights")
    return weights


def lineage_inputs(planes: Sequence[TernaryPlanes], weights: Sequence[float]) -> tuple[MergeInput, ...]:
    return tuple(MergeInput(p.label, sha256_file(p.directory / FILENAME) if p.directory else "", float(w))
                 for p, w in zip(planes, weights))


def merged_tensors(first: TernaryPlanes, tau: torch.Tensor) -> dict[str, torch.Tensor]:
    """θ_init + τ per record in the record's dtype (CPU), plus the carried tensors."""
    records = first.records
    tensors = {}
    for name, shape, dtype, theta, offset, numel in zip(records.names, records.shapes, records.dtypes,
                                                        records.theta_inits, records.offsets, records.numels):
        values = reconstruct(tau[offset : offset + numel], 1.0, theta, DTYPES_BY_NAME[dtype])
        tensors[name] = values.reshape(shape).cpu()
    tensors.update(first.carried)
    return tensors


def write_peft(first: TernaryPlanes, tau: torch.Tensor, dst: Path, lineage: dict, *, overwrite: bool = False,
               extra: Mapping[str, str] | None = None) -> None:
    """A standard PEFT adapter directory: the first input's adapter_config.json, the merged weights, a model card
    listing the inputs, and ``extra`` text files (name → text)."""
    from compeft.adapters import write_adapter
    from compeft.modelcard import render_derived_card

    config = adapter_config_bytes(first.directory / FILENAME, first.source)
    with atomic_directory(dst, overwrite) as tmp:
        write_adapter(tmp, config, merged_tensors(first, tau))
        (tmp / "README.md").write_text(render_derived_card(dst.name, first.source.get("base_model"), lineage),
                                       encoding="utf-8")
        for name, text in (extra or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")


def write_compeft(first: TernaryPlanes, tau: torch.Tensor, dst: Path, lineage: dict, density: float | None,
                  alpha: float | None, codec_id: str, *, overwrite: bool = False) -> ArtifactInfo:
    """Compress the merged τ into an artifact: density k (default: its own support), α (default: the one whose
    scale α·σ is the mean kept magnitude, the least-squares scale for the kept signs)."""
    from compeft.adapters import ADAPTER_CONFIG

    support = int(torch.count_nonzero(tau).item())
    if support == 0:
        raise InputError(f"{dst}: the merged task vector is zero everywhere; there is nothing to compress")
    tern = ternarize(tau, density if density is not None else min(1.0, support / tau.numel()))
    if tern.kept == 0 or tern.sigma == 0:
        raise InputError(f"{dst}: the merged task vector keeps no entry at this density")
    if alpha is None:
        kept_values = tau[tern.signs.ne(0)].abs().cpu().to(torch.float64)  # summed on the CPU: one order everywhere
        mean_kept = float(kept_values.sum()) / tern.kept
        alpha = mean_kept / scale_of(1.0, tern.sigma)[0]  # over σ as stored (float32): identical on CPU and CUDA
    sigma, scale = scale_of(alpha, tern.sigma)
    codec = get_codec(codec_id)
    records = first.records.records()
    payload = codec.encode(tern.signs, [r.numel for r in records])
    config = adapter_config_bytes(first.directory / FILENAME, first.source)  # checked against its recorded hash
    config_path = first.directory / ADAPTER_CONFIG
    source = {"files": {ADAPTER_CONFIG: hashlib.sha256(config).hexdigest()}, "peft_type": first.source.get("peft_type"),
              "base_model": first.source.get("base_model"), lineage["operation"]: lineage}
    document = Document(
        kind="adapter", codec=codec.id, density=float(density if density is not None else tern.kept / tau.numel()),
        alpha=float(alpha), sigma=sigma, scale=scale, threshold=tern.threshold, d=tau.numel(), kept=tern.kept,
        carried=tuple(CarriedRecord(n, tuple(t.shape), dtype_name(t.dtype)) for n, t in first.carried.items()),
        source=source, package_version=__version__,
    )
    return write_artifact(dst, document, payload, dict(first.carried), records, {ADAPTER_CONFIG: config_path},
                          dst.name, overwrite=overwrite)


def merge(artifacts: Sequence[str | Path | TernaryPlanes], dst: str | Path, config: MergeConfig | None = None, *,
          overwrite: bool = False, **options) -> MergeResult:
    """Merge compressed artifacts of one record layout into ``dst`` (a PEFT adapter directory, or an artifact with
    ``to="compeft"``). ``options`` are MergeConfig fields when no ``config`` is given."""
    if config is not None and options:
        raise OptionError(f"pass either a MergeConfig or its fields, not both ({', '.join(sorted(options))})")
    config = config if config is not None else MergeConfig(**options)
    dst = Path(dst)
    check_destination(dst, overwrite)
    device = resolve_device(config.device)
    planes = open_inputs(artifacts, device)
    for p in planes:
        if p.directory is not None and p.directory.resolve() == dst.resolve():
            raise InputError(f"{dst}: destination is one of the inputs")
    weights = weights_for(config.weights, len(planes))
    tau = merge_method(config).merge(planes, weights)
    result = MergeResult(str(dst), config.to, config.method, config.lam, lineage_inputs(planes, weights), planes[0].d,
                         int(torch.count_nonzero(tau).item()))
    if config.to == "peft":
        write_peft(planes[0], tau, dst, result.lineage(), overwrite=overwrite)
        return result
    info = write_compeft(planes[0], tau, dst, result.lineage(), config.density, config.alpha, config.codec,
                         overwrite=overwrite)
    return replace(result, artifact=info)
