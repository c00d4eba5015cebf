"""The adapter pipeline: adapter directory → task vector → ternary pattern → codec payload → artifact, and
back from an artifact to a standard PEFT adapter directory (full fine-tunes: ``fullmodel``)."""

from __future__ import annotations

from pathlib import Path

import torch

from compeft.adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    read_adapter,
    write_adapter,
)
from compeft.artifact import (
    Artifact,
    ArtifactInfo,
    decode_deltas,
    scale_of,
    write_artifact,
)
from compeft.atomic import atomic_directory
from compeft.codecs import get_codec
from compeft.config import CompressionConfig
from compeft.container import FILENAME
from compeft.document import CarriedRecord, Document
from compeft.dtypes import dtype_name
from compeft.errors import ContainerError
from compeft.hashing import sha256_file
from compeft.sparsify import ternarize
from compeft.taskvector import build_task_vector, carried_names, task_vector_from_blob
from compeft.version import __version__


def compress_adapter(src: Path, dst: Path, config: CompressionConfig, device: torch.device, *,
                     overwrite: bool = False) -> ArtifactInfo:
    """Compress a PEFT adapter directory into an artifact directory."""
    adapter = read_adapter(src, pinned=device.type == "cuda")
    if adapter.blob is not None:
        tv = task_vector_from_blob(adapter.blob, adapter.tensors, device, adapter.path / ADAPTER_WEIGHTS)
    else:
        tv = build_task_vector(adapter.tensors, device)
    tern = ternarize(tv.tau, config.density)
    sigma, scale = scale_of(config.alpha, tern.sigma)
    codec = get_codec(config.codec)
    payload = codec.encode(tern.signs, [r.numel for r in tv.records])
    carried = {n: adapter.tensors[n] for n in carried_names(adapter.tensors)}
    document = Document(
        kind="adapter", codec=codec.id, density=config.density, alpha=config.alpha, sigma=sigma, scale=scale,
        threshold=tern.threshold, d=tv.d, kept=tern.kept,
        carried=tuple(CarriedRecord(n, tuple(t.shape), dtype_name(t.dtype)) for n, t in carried.items()),
        source={"files": adapter.source_sha256, "peft_type": adapter.peft_type, "base_model": adapter.base_model,
                "bytes": adapter.weights_bytes},
        package_version=__version__,
    )
    return write_artifact(dst, document, payload, carried, tv.records, {ADAPTER_CONFIG: adapter.path / ADAPTER_CONFIG},
                          Path(src).resolve().name, overwrite=overwrite)


def checked_config(artifact_dir: Path, source) -> Path:
    """The artifact's adapter_config.json, checked against the hash its document records (``source``)."""
    config_path = artifact_dir / ADAPTER_CONFIG
    expected = source.get("files", {}).get(ADAPTER_CONFIG)
    if not config_path.is_file():
        raise ContainerError(f"{config_path}: missing beside {FILENAME}")
    if expected and sha256_file(config_path) != expected:
        raise ContainerError(f"{config_path}: checksum mismatch with the source hash recorded in {FILENAME}")
    return config_path


def decompress_adapter(artifact: Artifact, dst: Path, device: torch.device, *, overwrite: bool = False) -> Path:
    """Write the standard PEFT adapter directory an adapter artifact reconstructs to."""
    config_path = checked_config(artifact.path.parent, artifact.document.source)
    deltas = decode_deltas(artifact.container, device, checked=(artifact.document, artifact.records))
    tensors = {n: t.cpu() for n, t in deltas.items()}  # views of one buffer that do not overlap: safetensors takes them
    tensors.update(artifact.container.carried)
    with atomic_directory(dst, overwrite) as tmp:
        write_adapter(tmp, config_path.read_bytes(), tensors)
    return dst
