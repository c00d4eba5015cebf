"""Full fine-tune residuals: τ = θ_ft − θ_base, streamed tensor by tensor in two passes.

Pass 1 reads each shared floating tensor pair once to accumulate σ (float64 moments) and the
23-bit magnitude histogram; pass 2 reads them again and writes the ternary pattern, deferring only
the entries of the one boundary bin until its exact 8-bit cut is known. Peak memory is a few
tensors in float32 plus one int8 per parameter of τ; the two models are never held in float32.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import torch

from compeft.adapters import PICKLE_SUFFIXES, read_config
from compeft.artifact import (
    Artifact,
    ArtifactInfo,
    reconstruct,
    scale_of,
    write_artifact,
)
from compeft.atomic import atomic_directory
from compeft.checkpoint import INDEX, WEIGHTS, Checkpoint, index_document
from compeft.codecs import get_codec
from compeft.config import CompressionConfig
from compeft.container import FILENAME, named_payload_errors, tensor_bytes
from compeft.document import CarriedRecord, Document
from compeft.dtypes import DTYPES_BY_NAME, dtype_name
from compeft.errors import AdapterFormatError, ContainerError
from compeft.hashing import sha256_file
from compeft.progress import Progress
from compeft.sparsify import (
    LOW_BINS,
    LOW_BITS,
    MagnitudeHistogram,
    Moments,
    bits_to_float,
    kept_count,
    magnitude_bits,
    select_in_bin,
)
from compeft.taskvector import DeltaRecord
from compeft.version import __version__

CONFIG = "config.json"
FLOATING = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
SIDE_FILE_CAP = 64 << 20
SHARD_BYTES = 2 << 30


def side_files(directory: Path) -> list[Path]:
    """Small non-weight files (config, tokenizer, generation config) that travel with the artifact."""
    skip = {WEIGHTS, INDEX, FILENAME, "README.md"}
    out = []
    for p in sorted(directory.iterdir()):
        if p.is_file() and p.name not in skip and p.suffix not in (".safetensors", *PICKLE_SUFFIXES):
            if p.stat().st_size <= SIDE_FILE_CAP:
                out.append(p)
    return out


def plan_tensors(ft: Checkpoint, base: Checkpoint) -> tuple[list[DeltaRecord], list[str]]:
    """Delta records (floating tensors in both with equal shapes) and carried names, sorted."""
    base_names = set(base.names())
    records, carried, offset = [], [], 0
    for name in ft.names():
        dtype, shape = ft.meta(name)
        if name in base_names and dtype in FLOATING:
            base_dtype, base_shape = base.meta(name)
            if base_dtype in FLOATING and base_shape == shape:
                rec = DeltaRecord(name, shape, dtype_name(dtype), 0.0, offset)
                records.append(rec)
                offset += rec.numel
                continue
        carried.append(name)
    return records, carried


def residual(ft: Checkpoint, base: Checkpoint, name: str, device: torch.device) -> tuple[torch.Tensor, str]:
    """τ of one tensor (float32, flat, on device) and the sha256 of the base tensor's bytes."""
    b = base.get(name)
    digest = hashlib.sha256(tensor_bytes(b)).hexdigest()
    tau = ft.get(name).to(device=device, dtype=torch.float32).reshape(-1) - b.to(device=device, dtype=torch.float32).reshape(-1)
    if not bool(torch.isfinite(tau).all()):
        raise AdapterFormatError(f"{ft.directory}: tensor {name} gives a NaN or Inf residual")
    return tau, digest


def compress_full(src: Path, dst: Path, base_dir: Path, config: CompressionConfig, device: torch.device, *,
                  overwrite: bool, progress: bool) -> ArtifactInfo:
    """Compress a fine-tuned model directory against its base into an artifact directory."""
    density, alpha, codec = config.density, config.alpha, get_codec(config.codec)
    ft, base = Checkpoint(src), Checkpoint(base_dir)
    if not (src / CONFIG).is_file():
        raise AdapterFormatError(f"{src}: no {CONFIG} (not a Hugging Face model directory)")
    records, carried_names = plan_tensors(ft, base)
    if not records:
        raise AdapterFormatError(f"{src}: no floating tensor shares a name and shape with {base_dir}")
    d = records[-1].offset + records[-1].numel
    m = kept_count(density, d)

    moments, hist = Moments(), MagnitudeHistogram(device)
    base_hashes: dict[str, str] = {}
    bar = Progress("pass 1/2 (σ, histogram)", len(records), progress)
    for rec in records:
        tau, base_hashes[rec.name] = residual(ft, base, rec.name, device)
        moments.add(tau)
        hist.add(magnitude_bits(tau))
        bar.step()
    sigma = moments.std()
    bin_index, rank = hist.locate(m)
    del hist

    signs = torch.zeros(d, dtype=torch.int8, device=device)
    pending_at, pending_low, pending_sign = [], [], []
    bar = Progress("pass 2/2 (ternarize)", len(records), progress)
    for rec in records:
        tau, digest = residual(ft, base, rec.name, device)
        if digest != base_hashes[rec.name]:
            raise AdapterFormatError(f"{base_dir}: tensor {rec.name} changed between the two passes")
        bits = magnitude_bits(tau)
        high = bits >> LOW_BITS
        seg = signs[rec.offset : rec.offset + rec.numel]
        seg.copy_(torch.where(high > bin_index, torch.sign(tau), torch.zeros((), device=device)).to(torch.int8))
        boundary = torch.nonzero(high == bin_index).reshape(-1)
        pending_at.append(boundary + rec.offset)
        pending_low.append(bits[boundary] & (LOW_BINS - 1))
        pending_sign.append(torch.sign(tau[boundary]).to(torch.int8))
        bar.step()
    at, low, sign = torch.cat(pending_at), torch.cat(pending_low), torch.cat(pending_sign)
    cut = select_in_bin(low, rank)
    keep = low >= cut
    signs[at[keep]] = sign[keep]
    threshold = bits_to_float((bin_index << LOW_BITS) | cut)
    kept = int(torch.count_nonzero(signs).item())

    sigma32, scale = scale_of(alpha, sigma)
    payload = codec.encode(signs, [r.numel for r in records])
    del signs
    carried = {name: ft.get(name) for name in carried_names}
    files = {p.name: sha256_file(p) for p in [src / CONFIG, *ft.files()]}
    config_json = read_config(src / CONFIG)
    document = Document(
        kind="full", codec=codec.id, density=density, alpha=alpha, sigma=sigma32, scale=scale, threshold=threshold,
        d=d, kept=kept, carried=tuple(CarriedRecord(n, tuple(t.shape), dtype_name(t.dtype)) for n, t in carried.items()),
        source={"files": files, "peft_type": "FULL", "base_model": config_json.get("_name_or_path") or base_dir.name,
                "bytes": ft.bytes()},
        package_version=__version__, base_sha256=base_hashes,
        weight_map={name: file.name for name, file in ft.weight_map.items()} if (src / INDEX).is_file() else None,
    )
    return write_artifact(dst, document, payload, carried, tuple(records), {p.name: p for p in side_files(src)},
                          src.resolve().name, overwrite=overwrite)


def plan_shards(sizes: dict[str, int], shard_bytes: int) -> list[tuple[str, list[str]]]:
    """(file, names) shards of at most shard_bytes each, names in order (one tensor may exceed it)."""
    shards: list[list[str]] = [[]]
    used = 0
    for name, size in sizes.items():
        if shards[-1] and used + size > shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += size
    if len(shards) == 1:
        return [(WEIGHTS, shards[0])]
    return [(f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors", names) for i, names in enumerate(shards)]


def source_shards(weight_map: dict | None, names: list[str]) -> list[tuple[str, list[str]]] | None:
    """The fine-tune's own shard grouping, recorded at compression, if it had one."""
    if weight_map is None:
        return None
    if set(weight_map) != set(names) or any(Path(f).name != f for f in weight_map.values()):
        raise ContainerError("document weight_map does not match the tensors of the residual")
    files = sorted(set(weight_map.values()))
    return [(f, [n for n in names if weight_map[n] == f]) for f in files]


def decompress_full(artifact: Artifact, base_dir: Path, dst: Path, *, device: torch.device, overwrite: bool,
                    progress: bool, shard_bytes: int = SHARD_BYTES) -> Path:
    """Write base + s·t as a full sharded model directory (side files copied from the artifact)."""
    from safetensors.torch import save_file

    container, document, base = artifact.container, artifact.document, Checkpoint(base_dir)
    expected = document.base_sha256 or {}
    base_names = set(base.names())
    by_name = {r.name: r for r in artifact.records.records()}
    missing = [name for name in by_name if name not in base_names]
    if missing:
        raise ContainerError(f"{base_dir}: base lacks tensor {missing[0]} that the residual was computed against")
    with named_payload_errors(container.path):
        ternary = get_codec(document.codec).decode(container.payload, document.d, device)
    sizes = {}
    for name in sorted([*by_name, *container.carried]):
        if name in by_name:
            rec = by_name[name]
            sizes[name] = rec.numel * torch.empty((), dtype=DTYPES_BY_NAME[rec.dtype]).element_size()
        else:
            t = container.carried[name]
            sizes[name] = t.numel() * t.element_size()
    shards = source_shards(document.weight_map, list(sizes)) or plan_shards(sizes, shard_bytes)
    weight_map: dict[str, str] = {}
    bar = Progress("writing model", len(sizes), progress)
    with atomic_directory(dst, overwrite) as tmp:
        for p in side_files(container.path.parent):
            shutil.copyfile(p, tmp / p.name)
        for file, names in shards:
            tensors = {}
            for name in names:
                if name in by_name:
                    rec = by_name[name]
                    b = base.get(name)
                    if expected and hashlib.sha256(tensor_bytes(b)).hexdigest() != expected.get(name):
                        raise ContainerError(f"{base_dir}: tensor {name} differs from the base the residual was made against")
                    value = reconstruct(ternary[rec.offset : rec.offset + rec.numel], document.scale, b, DTYPES_BY_NAME[rec.dtype])
                    tensors[name] = value.reshape(rec.shape).cpu().contiguous()
                else:
                    tensors[name] = container.carried[name].contiguous()
                weight_map[name] = file
                bar.step()
            save_file(tensors, str(tmp / file), metadata={"format": "pt"})
        if len(shards) > 1:
            (tmp / INDEX).write_text(index_document(weight_map, sum(sizes.values())), encoding="utf-8")
    return dst

