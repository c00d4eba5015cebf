"""The full fine-tune writer as it was before streaming (issue 17), kept verbatim as the reference that the
streaming writer must reproduce byte for byte: it holds one int8 per parameter and the whole payload."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from compeft.adapters import read_config
from compeft.artifact import ArtifactInfo, scale_of, write_artifact
from compeft.checkpoint import INDEX, Checkpoint
from compeft.codecs import get_codec
from compeft.config import CompressionConfig
from compeft.container import tensor_bytes
from compeft.document import CarriedRecord, Document
from compeft.dtypes import dtype_name
from compeft.errors import AdapterFormatError
from compeft.fullmodel import CONFIG, plan_tensors, side_files
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
from compeft.version import __version__


def residual(ft: Checkpoint, base: Checkpoint, name: str, device: torch.device) -> tuple[torch.Tensor, str]:
    """τ of one tensor (float32, flat, on device) and the sha256 of the base tensor's bytes."""
    b = base.get(name)
    digest = hashlib.sha256(tensor_bytes(b)).hexdigest()
    tau = ft.get(name).to(device=device, dtype=torch.float32).reshape(-1) - b.to(device=device, dtype=torch.float32).reshape(-1)
    if not bool(torch.isfinite(tau).all()):
        raise AdapterFormatError(f"{ft.directory}: tensor {name} gives a NaN or Inf residual")
    return tau, digest


def previous_compress_full(src: Path, dst: Path, base_dir: Path, config: CompressionConfig, device: torch.device, *,
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
