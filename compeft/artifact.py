"""The artifact: write and finish one, open and check one, describe one, and rebuild its tensors.

``reconstruct`` is the one reconstruction, θ = θ_init + s·t computed in float32 and rounded once to the
record's dtype (θ_init's own bits where t = 0), and every decode path goes through it: as a value table (``value_table``: what the codecs
write for t = −1, 0, +1) for records that share a scalar θ_init (file, fast and resident loads, decompress),
per tensor with the base tensor as θ_init (full fine-tune residuals), and as its fused many-tensor form
``reconstruct_into`` for the calibration sweep's in-place updates.
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compeft.adapters import ADAPTER_CONFIG
from compeft.atomic import atomic_directory
from compeft.codecs import get_codec
from compeft.codecs.base import ternary_values
from compeft.container import (
    CARRIED_PREFIX,
    FILENAME,
    PAYLOAD,
    RECORDS_PREFIX,
    Container,
    StreamedTensor,
    map_container,
    named_payload_errors,
    read_container,
    streamed,
    write_container,
    write_container_streamed,
)
from compeft.document import (
    Document,
    RecordColumns,
    check,
    record_count,
    record_kinds,
    record_tensors,
)
from compeft.dtypes import DTYPES_BY_NAME
from compeft.errors import ContainerError, InputError
from compeft.hashing import sha256_file
from compeft.limits import check_allocation
from compeft.modelcard import render_model_card
from compeft.stats import entropy_bits_per_param
from compeft.taskvector import DeltaRecord

CARD = "README.md"


@dataclass(frozen=True)
class ArtifactInfo:
    """What compress returns and ``compeft inspect`` shows: the document's figures and sizes from the file."""

    path: str
    format_version: int
    kind: str
    codec: str
    density: float
    alpha: float
    sigma: float
    scale: float
    threshold: float
    d: int
    kept: int
    tensors: int
    carried: int
    payload_bytes: int
    bytes_artifact: int
    bits_per_param: float
    entropy_bits_per_param: float
    peft_type: str | None
    base_model: str | None
    bytes_source: int | None
    ratio: float | None
    ratio_16bit: float
    sha256: str
    package_version: str
    source: dict

    def summary(self) -> str:
        """The one line ``compeft compress`` prints."""
        before = f"{self.bytes_source:,} → " if self.bytes_source is not None else ""
        ratio = f"{self.ratio:.1f}× vs source, " if self.ratio is not None else ""
        return (
            f"{self.path}: {before}{self.bytes_artifact:,} bytes ({ratio}{self.ratio_16bit:.1f}× vs 16-bit); "
            f"{self.bits_per_param:.3f} bits/param vs H(k)={self.entropy_bits_per_param:.3f} "
            f"(k={self.density:g}, kept {self.kept:,}/{self.d:,}, codec {self.codec})"
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Artifact:
    """An artifact's container, read and checked: its typed document, its delta records and its codec's plan
    (the payload's structure checked against d without decoding)."""

    container: Container
    document: Document
    records: RecordColumns
    plan: Any = None

    @property
    def path(self) -> Path:
        """The container file."""
        return self.container.path


def open_artifact(path: str | Path, *, verify: bool = True, mapped: bool = False) -> Artifact:
    """Read and check an artifact's container (every checksum unless ``verify`` is off) and its payload's
    structure (the codec's ``prepare``: what decoding checks before it writes anything); ``mapped``: map the file
    instead of reading it (tensors stay file pages: full fine-tune residuals of any size)."""
    container = (map_container if mapped else read_container)(path, verify=verify)
    document, records = check(container)
    with named_payload_errors(container.path):
        plan = get_codec(document.codec).prepare(container.payload, document.d)
    return Artifact(container, document, records, plan)


def describe(artifact: Artifact, sha256: str | None = None) -> ArtifactInfo:
    """The figures of a checked artifact (``sha256``: of the container file, hashed here when not given)."""
    container, doc = artifact.container, artifact.document
    payload = int(container.payload.numel())
    carried_bytes = sum(t.numel() * t.element_size() for t in container.carried.values())
    source_bytes = doc.source.get("bytes")
    file_bytes = container.file_bytes
    return ArtifactInfo(
        path=str(Path(container.path).parent), format_version=doc.format_version, kind=doc.kind, codec=doc.codec,
        density=doc.density, alpha=doc.alpha, sigma=doc.sigma, scale=doc.scale, threshold=doc.threshold, d=doc.d,
        kept=doc.kept, tensors=record_count(container), carried=len(doc.carried), payload_bytes=payload,
        bytes_artifact=file_bytes, bits_per_param=8 * payload / doc.d if doc.d else 0.0,
        entropy_bits_per_param=entropy_bits_per_param(doc.kept / doc.d) if doc.d else 0.0,
        peft_type=doc.source.get("peft_type"), base_model=doc.source.get("base_model"), bytes_source=source_bytes,
        ratio=source_bytes / file_bytes if source_bytes else None, ratio_16bit=(2 * doc.d + carried_bytes) / file_bytes,
        sha256=sha256 or sha256_file(container.path), package_version=doc.package_version, source=dict(doc.source),
    )


def write_artifact(dst: Path, document: Document, payload: torch.Tensor, carried: Mapping[str, torch.Tensor],
                   records: tuple[DeltaRecord, ...], side_files: Mapping[str, Path], name: str, *,
                   overwrite: bool = False) -> ArtifactInfo:
    """Write an artifact directory atomically: side files copied, the container, then read back, checked and
    described in its model card."""
    with atomic_directory(dst, overwrite) as tmp:
        for file_name, path in side_files.items():
            shutil.copyfile(path, tmp / file_name)
        write_container(tmp / FILENAME, document.to_json(records), payload, carried, record_tensors(records))
        info = describe(open_artifact(tmp / FILENAME))
        (tmp / CARD).write_text(render_model_card(info, name), encoding="utf-8")
    return ArtifactInfo(**{**info.to_dict(), "path": str(dst)})


def write_streamed_artifact(dst: Path, document: Document, payload: StreamedTensor, carried: Mapping[str, StreamedTensor],
                            records: tuple[DeltaRecord, ...], side_files: Mapping[str, Path], name: str, *,
                            overwrite: bool = False) -> ArtifactInfo:
    """write_artifact for a payload and carried tensors given in pieces (full fine-tunes): the same bytes, in bounded
    memory; the container is checked by mapping it."""
    tensors = {PAYLOAD: payload, **{CARRIED_PREFIX + n: t for n, t in carried.items()},
               **{RECORDS_PREFIX + n: streamed(t) for n, t in record_tensors(records).items()}}
    with atomic_directory(dst, overwrite) as tmp:
        for file_name, path in side_files.items():
            shutil.copyfile(path, tmp / file_name)
        write_container_streamed(tmp / FILENAME, document.to_json(records), tensors)
        info = describe(open_artifact(tmp / FILENAME, mapped=True))
        (tmp / CARD).write_text(render_model_card(info, name), encoding="utf-8")
    return ArtifactInfo(**{**info.to_dict(), "path": str(dst)})


def adapter_config_bytes(container_file: Path, source: Mapping, *, name: str = ADAPTER_CONFIG,
                         required: bool = True) -> bytes | None:
    """The adapter's config file (``adapter_config.json``) beside an artifact's container, checked against the
    hash its document records (None when it is absent and not ``required``)."""
    config_path = Path(container_file).parent / name
    if not config_path.is_file():
        if not required:
            return None
        raise ContainerError(f"{config_path}: missing beside {FILENAME}")
    data = config_path.read_bytes()
    expected = source.get("files", {}).get(name)
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise ContainerError(f"{config_path}: checksum mismatch with the source hash recorded in {FILENAME}")
    return data


def float32(x: float) -> float:
    """x rounded to the nearest float32, as a Python float."""
    return float(np.float32(x))


def scale_of(alpha: float, sigma: float) -> tuple[float, float]:
    """(σ, s) as stored: σ rounded to float32 (identical on CPU and CUDA), s = float32(α·σ)."""
    sigma32 = float32(sigma)
    return sigma32, float32(alpha * sigma32)


def reconstruct(ternary: torch.Tensor, scale: float, theta_init: float | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """θ_init + s·t in float32, rounded once to ``dtype``, where t ≠ 0, and θ_init's own bits where t = 0: the
    reconstruction of the format (docs/format.md). A dropped entry adds −0.0 (x + −0.0 is x for every x, −0.0
    included, where + 0.0 would turn a −0.0 into +0.0), so an untouched weight keeps its bits and one applied in
    place equals it without a pass over the untouched entries."""
    values = fused_pattern(ternary, torch.float32, True) * torch.tensor(scale, dtype=torch.float32, device=ternary.device)
    if isinstance(theta_init, torch.Tensor):
        values += theta_init.to(device=values.device, dtype=torch.float32).reshape(values.shape)
    else:
        values += float(theta_init)  # always: −0.0 + 0.0 is the +0.0 of θ_init = 0
    return values.to(dtype)


def reconstruct_into(targets: list[torch.Tensor], patterns: list[torch.Tensor], scale: float,
                     theta_inits: list[torch.Tensor] | None, stored: torch.dtype) -> None:
    """``reconstruct`` of many tensors in a few fused launches, written in place into ``targets`` (one dtype and
    device), values identical: without θ_init the patterns are t in the targets' dtype and ±s (exact in float32)
    is rounded to ``stored`` then to the targets' dtype, as reconstruct-then-copy rounds it; with θ_init (float32
    tensors, patterns float32 holding −0.0 where t = 0) the float32 θ_init + s·t (s·t is exact) is rounded to
    ``stored``, then copied."""
    target_dtype = targets[0].dtype
    if theta_inits is None:
        s = float(torch.tensor(scale, dtype=torch.float32).to(stored).to(target_dtype))
        torch._foreach_copy_(targets, patterns)
        torch._foreach_mul_(targets, s)
        return
    values = torch._foreach_add(theta_inits, patterns, alpha=scale)
    if stored not in (torch.float32, target_dtype):
        values = [v.to(stored) for v in values]
    torch._foreach_copy_(targets, values)


def fused_pattern(ternary: torch.Tensor, dtype: torch.dtype, with_init: bool) -> torch.Tensor:
    """t as ``reconstruct_into`` takes it: in ``dtype`` without θ_init, else float32 with −0.0 where t = 0 (so that
    θ_init + s·t keeps θ_init's bits there, as ``reconstruct`` does)."""
    if not with_init:
        return ternary.to(dtype)
    return ternary.to(torch.float32).masked_fill_(ternary == 0, -0.0)


def value_table(scale: float, theta_init: float, dtype: torch.dtype) -> torch.Tensor:
    """(θ_init − s, θ_init, θ_init + s) in ``dtype``: what a codec writes for t = −1, 0, +1."""
    return reconstruct(ternary_values(), scale, theta_init, dtype)


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major strides of ``shape`` (a size-0 dimension counts as 1, as torch does)."""
    acc, rev = 1, []
    for size in reversed(shape):
        rev.append(acc)
        acc *= max(size, 1)
    return tuple(reversed(rev))


def layout_period(shapes: tuple[tuple[int, ...], ...], offsets: tuple[int, ...], tries: int = 16) -> int | None:
    """The smallest P (among a few candidates) with shape[i+P] = shape[i] and a constant offset[i+P] − offset[i]
    for every i: the layer period of a model's adapter (14 records per layer for an all-linear LoRA)."""
    n = len(shapes)
    if n < 2:
        return None
    first_seen: dict[tuple[int, ...], int] = {}
    group = np.fromiter(map(first_seen.setdefault, shapes, itertools.count()), np.int64, n)
    if len(first_seen) == n:
        return None
    off = np.asarray(offsets, dtype=np.int64)
    for p in (np.flatnonzero(group[1 : n // 2 + 1] == group[0])[:tries] + 1).tolist():
        if (group[p:] == group[:-p]).all() and (off[p:] - off[:-p] == off[p] - off[0]).all():
            return p
    return None


class ViewPlan:
    """How the flat output is cut into the records' tensors, worked out once. With a layer period P, the
    records of each of the P places in a layer come from one as_strided + unbind (P calls, not ~1000)."""

    def __init__(self, cols: RecordColumns) -> None:
        n, shapes, offsets = len(cols.names), cols.shapes, cols.offsets
        strides: dict[tuple[int, ...], tuple[int, ...]] = {}

        def stride_of(shape: tuple[int, ...]) -> tuple[int, ...]:
            return strides.get(shape) or strides.setdefault(shape, contiguous_strides(shape))

        self.names = cols.names
        self.lanes: list[tuple[tuple[int, ...], tuple[int, ...], int]] = []
        done = 0
        period = layout_period(shapes, offsets)
        if period is not None:
            reps, step = n // period, offsets[period] - offsets[0]
            self.lanes = [((reps, *shapes[j]), (step, *stride_of(shapes[j])), offsets[j]) for j in range(period)]
            done = reps * period
        self.rest = [(shapes[i], stride_of(shapes[i]), offsets[i]) for i in range(done, n)]

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each record's tensor as a view into ``flat``, in record order."""
        base = flat.storage_offset()
        lanes = [flat.as_strided(size, stride, base + offset).unbind(0) for size, stride, offset in self.lanes]
        views = list(itertools.chain.from_iterable(zip(*lanes)))
        views += [flat.as_strided(shape, stride, base + offset) for shape, stride, offset in self.rest]
        return dict(zip(self.names, views))


def finish_quietly(finish: Callable[[], None]) -> None:
    """Wait for a decode whose result is being discarded, ignoring its payload errors."""
    try:
        finish()
    except InputError:
        pass


def single_kind(dtypes, theta_inits) -> tuple[str, float] | None:
    """(dtype name, θ_init) when every record shares them (every LoRA), else None."""
    kinds = set(zip(dtypes, theta_inits))
    return next(iter(kinds)) if len(kinds) == 1 else None


def decode_deltas(container: Container, device: torch.device, *, checked: tuple[Document, RecordColumns] | None = None,
                  plan=None, staged=None, views: ViewPlan | None = None) -> dict[str, torch.Tensor]:
    """The delta tensors θ_init + s·t on ``device``, keyed by record name.

    When every record shares its dtype and θ_init (every LoRA), the codec writes the reconstruction straight
    into one flat tensor through a value table and the records are views into it (no int8 or float32
    intermediate); otherwise τ is decoded as int8 and each record rebuilt from its slice. ``checked`` is the
    container's checked (document, records), or the records are checked while the device decodes; ``plan`` is
    the codec's prepared plan, ``staged`` the payload's copy to the device already under way, ``views`` the
    view layout worked out earlier.
    """
    doc = container.doc
    with named_payload_errors(container.path):
        kind = single_kind(checked[1].dtypes, checked[1].theta_inits) if checked else _read_kind(record_kinds(container))
        d, scale = doc.get("d"), doc.get("scale")
        if kind is None or type(d) is not int or type(scale) not in (int, float):
            document, cols = checked or check(container)
            ternary = get_codec(document.codec).decode(container.payload, document.d, device)
            return {r.name: reconstruct(ternary[r.offset : r.offset + r.numel], document.scale, r.theta_init,
                                        DTYPES_BY_NAME[r.dtype]).reshape(r.shape) for r in cols.records()}
        codec = get_codec(doc["codec"])
        values = value_table(float(scale), kind[1], DTYPES_BY_NAME[kind[0]])
        plan = codec.prepare(container.payload, d) if plan is None else plan  # before d entries are allocated
        check_allocation(d * values.element_size(), f"{container.path}: decoding {d:,} entries")
        flat = torch.empty(d, dtype=values.dtype, device=device)
        finish = codec.decode_into(plan, container.payload, flat, values, staged=staged)
        try:
            _, cols = checked or check(container)
        except BaseException:
            finish_quietly(finish)
            raise
        if single_kind(cols.dtypes, cols.theta_inits) != kind:
            finish_quietly(finish)
            raise ContainerError(f"{container.path}: tensor records changed between reads")
        tensors = (views or ViewPlan(cols)).views(flat)
        finish()
    return tensors


def _read_kind(kinds: set) -> tuple[str, float] | None:
    """The one (dtype, θ_init) read before the records are checked, or None (several, or unreadable)."""
    if len(kinds) != 1:
        return None
    dtype_name, theta_init = next(iter(kinds))
    return None if dtype_name is None or theta_init is None else (dtype_name, theta_init)
