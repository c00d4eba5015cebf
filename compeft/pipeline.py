"""The adapter pipeline: adapter directory → task vector → ternary pattern → codec payload → artifact, and
back from an artifact to the adapter's own layout (a PEFT directory, a diffusers LoRA file) with the same
file names and keys (full fine-tunes: ``fullmodel``)."""

from __future__ import annotations

from pathlib import Path

import torch

from compeft.adapters import (
    PEFT_LAYOUT,
    Layout,
    read_adapter,
    single_file_layout,
    write_adapter,
)
from compeft.artifact import (
    Artifact,
    ArtifactInfo,
    adapter_config_bytes,
    decode_deltas,
    scale_of,
    write_artifact,
)
from compeft.atomic import atomic_directory
from compeft.codecs import get_codec
from compeft.config import CompressionConfig
from compeft.document import CarriedRecord, Document
from compeft.dtypes import dtype_name
from compeft.errors import ContainerError
from compeft.sparsify import ternarize
from compeft.taskvector import build_task_vector, carried_names, task_vector_from_blob
from compeft.version import __version__


def compress_adapter(src: Path, dst: Path, config: CompressionConfig, device: torch.device, *,
                     overwrite: bool = False) -> ArtifactInfo:
    """Compress an adapter (a PEFT or diffusers directory, or a lone LoRA ``*.safetensors`` file) into an artifact
    directory."""
    adapter = read_adapter(src, pinned=device.type == "cuda")
    if adapter.blob is not None:
        tv = task_vector_from_blob(adapter.blob, adapter.tensors, adapter.theta_inits, device, adapter.weights_path)
    else:
        tv = build_task_vector(adapter.tensors, adapter.theta_inits, device)
    tern = ternarize(tv.tau, config.density)
    sigma, scale = scale_of(config.alpha, tern.sigma)
    codec = get_codec(config.codec)
    payload = codec.encode(tern.signs, [r.numel for r in tv.records])
    carried = {n: adapter.tensors[n] for n in carried_names(adapter.tensors, adapter.theta_inits)}
    source = {"files": adapter.source_sha256, "peft_type": adapter.peft_type, "base_model": adapter.base_model,
              "bytes": adapter.weights_bytes}
    if adapter.layout != PEFT_LAYOUT:  # peft artifacts keep the version-1 source object, byte for byte
        source.update(layout=adapter.layout.name, weights_file=adapter.layout.weights,
                      weights_metadata=adapter.weights_metadata or {})
    side_files = {adapter.layout.config: adapter.path / adapter.layout.config} if adapter.layout.config else {}
    document = Document(
        kind="adapter", codec=codec.id, density=config.density, alpha=config.alpha, sigma=sigma, scale=scale,
        threshold=tern.threshold, d=tv.d, kept=tern.kept,
        carried=tuple(CarriedRecord(n, tuple(t.shape), dtype_name(t.dtype)) for n, t in carried.items()),
        source=source,
        package_version=__version__,
    )
    return write_artifact(dst, document, payload, carried, tv.records, side_files, Path(src).resolve().name,
                          overwrite=overwrite)


def source_layout(artifact: Artifact) -> tuple[Layout, dict[str, str] | None]:
    """The layout an adapter artifact was compressed from (peft when the source names none) and the weights
    file's safetensors metadata to write back (None: peft's own)."""
    source = artifact.document.source
    if source.get("layout") is None:
        return PEFT_LAYOUT, None
    name, weights, meta = source.get("layout"), source.get("weights_file"), source.get("weights_metadata", {})
    if name != "diffusers" or not isinstance(weights, str) or Path(weights).name != weights or not weights.endswith(".safetensors") \
            or not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ContainerError(f"{artifact.path}: document field 'source' names an unknown layout or weights file "
                             f"({name!r}, {weights!r})")
    return single_file_layout(weights), dict(meta)


def decompress_adapter(artifact: Artifact, dst: Path, device: torch.device, *, overwrite: bool = False) -> Path:
    """Write the adapter directory an adapter artifact reconstructs to, in the layout it came from: a standard
    PEFT directory, or the diffusers/kohya LoRA file under its own name with its own metadata."""
    file_layout, metadata = source_layout(artifact)
    config_bytes = adapter_config_bytes(artifact.path, artifact.document.source, name=file_layout.config) \
        if file_layout.config else None
    deltas = decode_deltas(artifact.container, device, checked=(artifact.document, artifact.records))
    tensors = {n: t.cpu() for n, t in deltas.items()}  # views of one buffer that do not overlap: safetensors takes them
    tensors.update(artifact.container.carried)
    with atomic_directory(dst, overwrite) as tmp:
        write_adapter(tmp, config_bytes, tensors, layout=file_layout, metadata=metadata)
    return dst
