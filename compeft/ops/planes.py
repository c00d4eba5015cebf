"""An artifact's ternary pattern as two bit planes of 64-bit words: what similarity and merging compute on.

``support`` has bit i set where t_i ≠ 0, ``negative`` where t_i = −1 (bit i of a plane is bit i mod 64 of word
i // 64; padding bits are 0). This is the paper's two-plane form (§2.2) with the positive plane replaced by the
support (pos = support & ~negative), so that a pair needs two popcounts per word: common = |S_A ∩ S_B| and
disagree = |S_A ∩ S_B ∩ (N_A ⊕ N_B)|. The planes are held as int64 tensors (torch has no uint64 arithmetic);
the CPU kernels view them as uint64.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from compeft.artifact import Artifact, open_artifact
from compeft.codecs import get_codec
from compeft.container import named_payload_errors
from compeft.document import RecordColumns
from compeft.errors import InputError

WORD_BITS = 64


def words_for(d: int) -> int:
    """Number of 64-bit words of a plane over d entries."""
    return (d + WORD_BITS - 1) // WORD_BITS


@functools.lru_cache(maxsize=64)  # adapters of one layout share their records (document.check remembers them)
def layout_key(records: RecordColumns) -> str:
    """sha256 of the record layout (names, shapes, θ_init in τ order): artifacts with equal keys can be compared
    and merged position by position. Dtypes are left out: a bf16 and an fp32 copy of an adapter share a layout."""
    layout = [list(records.names), [list(s) for s in records.shapes], list(records.theta_inits)]
    return hashlib.sha256(json.dumps(layout, separators=(",", ":")).encode()).hexdigest()


def pack_words(bits: torch.Tensor) -> torch.Tensor:
    """A 0/1 (or bool) vector packed into int64 words, LSB first, zero padded (on the vector's device)."""
    n = bits.numel()
    words = words_for(n)
    if bits.device.type == "cpu":
        flat = bits.reshape(-1)
        flat = flat if flat.dtype == torch.bool else flat != 0
        packed = np.zeros(words * 8, dtype=np.uint8)
        packed[: (n + 7) // 8] = np.packbits(flat.numpy(), bitorder="little")
        return torch.from_numpy(packed.view("<i8"))
    padded = torch.zeros(words * WORD_BITS, dtype=torch.uint8, device=bits.device)
    padded[:n] = bits.reshape(-1).to(torch.uint8)
    weights = 1 << torch.arange(8, device=bits.device, dtype=torch.int32)
    data = (padded.view(-1, 8).to(torch.int32) * weights).sum(1, dtype=torch.int32).to(torch.uint8)
    return data.view(torch.int64)


def unpack_words(words: torch.Tensor, d: int) -> torch.Tensor:
    """The first d bits of int64 words as a bool vector (on the words' device)."""
    data = words.contiguous().view(torch.uint8)
    if words.device.type == "cpu":
        return torch.from_numpy(np.unpackbits(data.numpy(), count=d, bitorder="little").view(np.bool_))
    weights = (1 << torch.arange(8, device=words.device, dtype=torch.int32)).to(torch.uint8)
    return (data.unsqueeze(1) & weights).ne(0).reshape(-1)[:d]


@dataclass(frozen=True)
class TernaryPlanes:
    """The ternary pattern t of one artifact as support and negative planes, with what reconstructs τ̂ = s·t.

    ``kept`` is |S|, counted from the planes; ``records`` map τ's positions to named tensors; ``carried`` are the
    tensors the artifact carries bit for bit (heads, DoRA magnitudes)."""

    support: torch.Tensor
    negative: torch.Tensor
    d: int
    scale: float
    kept: int
    records: RecordColumns
    label: str
    kind: str = "adapter"
    source: Mapping = field(default_factory=dict, repr=False)
    carried: Mapping[str, torch.Tensor] = field(default_factory=dict, repr=False)
    directory: Path | None = None

    @property
    def device(self) -> torch.device:
        return self.support.device

    @property
    def layout(self) -> str:
        """The layout key (``layout_key``) of the records."""
        return layout_key(self.records)

    def positive(self) -> torch.Tensor:
        """The positive plane: support & ~negative."""
        return self.support & ~self.negative

    def ternary(self, dtype: torch.dtype = torch.int8) -> torch.Tensor:
        """t as a dense vector of ``dtype`` (the reference the popcount paths are checked against)."""
        s = unpack_words(self.support, self.d).to(dtype)
        n = unpack_words(self.negative, self.d).to(dtype)
        return s - 2 * n

    def to(self, device: str | torch.device) -> TernaryPlanes:
        """The same planes on another device."""
        device = torch.device(device)
        if device == self.device:
            return self
        return TernaryPlanes(self.support.to(device), self.negative.to(device), self.d, self.scale, self.kept,
                             self.records, self.label, self.kind, self.source, self.carried, self.directory)


def planes_from_ternary(signs: torch.Tensor, *, scale: float, records: RecordColumns, label: str,
                        kind: str = "adapter", source: Mapping | None = None,
                        carried: Mapping[str, torch.Tensor] | None = None, directory: Path | None = None) -> TernaryPlanes:
    """Planes of an int8 ternary vector (on its device)."""
    if signs.device.type == "cuda":
        from compeft.ops.triton_popcount import pack_ternary, plane_count

        support, negative = pack_ternary(signs)
        kept = plane_count(support)
    else:
        support, negative = pack_words(signs != 0), pack_words(signs < 0)
        kept = int(torch.count_nonzero(signs).item())
    return TernaryPlanes(support, negative, int(signs.numel()), float(scale), kept, records, label, kind,
                         dict(source or {}), dict(carried or {}), directory)


def open_planes(path: str | Path | Artifact, device: str | torch.device = "cpu", *, verify: bool = True) -> TernaryPlanes:
    """The planes of an artifact (directory, container file or an opened ``Artifact``): its payload decoded on
    ``device`` with every codec check, then packed. Several files at once: ``compeft.ops.files.open_many``."""
    artifact = path if isinstance(path, Artifact) else open_artifact(path, verify=verify)
    document = artifact.document
    device = torch.device(device)
    with named_payload_errors(artifact.path):
        signs = get_codec(document.codec).decode(artifact.container.payload, document.d, device)
    planes = planes_from_ternary(signs, scale=document.scale, records=artifact.records, label="")
    return artifact_planes(artifact, planes.support, planes.negative, planes.kept)


def artifact_planes(artifact: Artifact, support: torch.Tensor, negative: torch.Tensor, kept: int) -> TernaryPlanes:
    """An artifact's planes from its decoded payload's packed words and their count, which must be the kept
    count its document records (InputError naming the file)."""
    document = artifact.document
    if kept != document.kept:
        raise InputError(f"{artifact.path}: the payload keeps {kept} entries, the document says {document.kept}")
    directory = artifact.path.parent
    return TernaryPlanes(support, negative, document.d, float(document.scale), kept, artifact.records, str(directory),
                         document.kind, dict(document.source or {}), dict(artifact.container.carried), directory)


def check_same_layout(planes: list[TernaryPlanes]) -> None:
    """Every artifact must have the first one's record layout (tensor names, shapes, θ_init), else one line
    naming the first that differs and how."""
    first = planes[0]
    for other in planes[1:]:
        if other.d != first.d:
            raise InputError(f"{other.label}: has {other.d:,} task-vector entries, {first.label} has {first.d:,} "
                             "(artifacts of different adapter layouts cannot be compared or merged)")
        if other.layout != first.layout:
            a, b = first.records, other.records
            where = next((f"tensor {x!r} vs {y!r}" for x, y in zip(a.names, b.names) if x != y), None)
            where = where or next((f"tensor {n!r} has shape {list(y)} vs {list(x)}"
                                   for n, x, y in zip(a.names, a.shapes, b.shapes) if x != y), None)
            where = where or next((f"tensor {n!r} has θ_init {y:g} vs {x:g}"
                                   for n, x, y in zip(a.names, a.theta_inits, b.theta_inits) if x != y), "records differ")
            raise InputError(f"{other.label}: record layout differs from {first.label} ({where})")
