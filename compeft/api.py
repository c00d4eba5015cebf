"""compress / decompress / load / inspect: the library's front door (the CLI, the calibration and the flows
call these). Each takes its configuration object or, for convenience, its fields as keywords."""

from __future__ import annotations

from pathlib import Path

import torch

from compeft.artifact import ArtifactInfo, describe, open_artifact
from compeft.atomic import check_destination
from compeft.config import CompressionConfig
from compeft.devices import resolve_device
from compeft.errors import InputError, OptionError


def compress(src: str | Path, dst: str | Path, config: CompressionConfig | None = None, *, base: str | Path | None = None,
             overwrite: bool = False, progress: bool = False, **options) -> ArtifactInfo:
    """Compress an adapter (a peft or diffusers directory, or a lone LoRA ``*.safetensors`` file; with ``base``, a
    full fine-tune) into an artifact directory.

    ``options`` are CompressionConfig fields (density, alpha, codec, device) when no ``config`` is given."""
    if config is not None and options:
        raise OptionError(f"pass either a CompressionConfig or its fields, not both ({', '.join(sorted(options))})")
    config = config if config is not None else CompressionConfig(**options)
    device = resolve_device(config.device)
    dst = Path(dst)
    check_destination(dst, overwrite)
    if Path(src).resolve() == dst.resolve():
        raise InputError(f"{dst}: destination is the source directory")
    if base is not None:
        from compeft.fullmodel import compress_full

        return compress_full(Path(src), dst, Path(base), config, device, overwrite=overwrite, progress=progress)
    from compeft.pipeline import compress_adapter

    return compress_adapter(Path(src), dst, config, device, overwrite=overwrite)


def load(path: str | Path, device: str | torch.device = "cpu", *, verify: bool = True) -> dict[str, torch.Tensor]:
    """The reconstructed adapter state dict (file key names, original dtypes) directly on ``device``.

    The fast path: file → pinned memory → one fused decode; delta tensors may be views into one
    buffer (they never overlap, so safetensors saves them as they are).
    """
    from compeft.fastload import load_fast

    return load_fast(path, resolve_device(device), verify=verify)


def inspect(path: str | Path) -> ArtifactInfo:
    """The figures of an artifact (checksums and structure verified, nothing decoded)."""
    return describe(open_artifact(path))


def decompress(src: str | Path, dst: str | Path, *, base: str | Path | None = None, device: str | torch.device = "auto",
               overwrite: bool = False, progress: bool = False) -> Path:
    """Write the adapter directory an artifact came from, in its layout (or, with ``base``, a full model directory)."""
    device = resolve_device(device)
    dst = Path(dst)
    check_destination(dst, overwrite)
    artifact = open_artifact(src, mapped=True)  # a full residual's payload can be larger than memory
    if artifact.document.kind == "full":
        if base is None:
            raise InputError(f"{artifact.path}: a full fine-tune residual needs --base BASE_DIR to decompress")
        from compeft.fullmodel import decompress_full

        return decompress_full(artifact, Path(base), dst, device=device, overwrite=overwrite, progress=progress)
    if base is not None:
        raise InputError(f"{artifact.path}: an adapter artifact takes no --base")
    from compeft.pipeline import decompress_adapter

    return decompress_adapter(artifact, dst, device, overwrite=overwrite)
