"""compress / decompress / load / inspect: what the CLI, the calibration and the flows call."""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from compeft import __version__
from compeft.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, dtype_name, read_adapter, sha256_file, write_adapter
from compeft.atomic import atomic_directory, check_destination
from compeft.codecs import DEFAULT_CODEC, get_codec
from compeft.container import FILENAME, named_payload_errors, read_container, write_container
from compeft.devices import resolve_device
from compeft.document import ArtifactInfo, artifact_info, build_document, check_document, record_tensors
from compeft.errors import ContainerError, InputError, OptionError
from compeft.modelcard import render_model_card
from compeft.sparsify import check_density, ternarize
from compeft.taskvector import build_task_vector, carried_names, reconstruct, task_vector_from_blob

CARD = "README.md"


@dataclass(frozen=True)
class CompressResult:
    """What one compression produced, with the figures of the summary line."""

    path: str
    kind: str
    codec: str
    density: float
    alpha: float
    sigma: float
    scale: float
    d: int
    kept: int
    bytes_source: int
    bytes_artifact: int
    payload_bytes: int
    ratio: float
    ratio_16bit: float
    bits_per_param: float
    entropy_bits_per_param: float
    sha256: str

    def summary(self) -> str:
        return (
            f"{self.path}: {self.bytes_source:,} → {self.bytes_artifact:,} bytes "
            f"({self.ratio:.1f}× vs source, {self.ratio_16bit:.1f}× vs 16-bit); "
            f"{self.bits_per_param:.3f} bits/param vs H(k)={self.entropy_bits_per_param:.3f} "
            f"(k={self.density:g}, kept {self.kept:,}/{self.d:,}, codec {self.codec})"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def check_alpha(alpha: float) -> float:
    """α must be a finite positive number."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise OptionError(f"alpha {alpha!r} is not a number") from None
    if not (math.isfinite(a) and a > 0):
        raise OptionError(f"alpha {alpha!r} must be a finite number > 0")
    return a


def float32(x: float) -> float:
    """x rounded to the nearest float32, as a Python float."""
    return float(np.float32(x))


def scale_of(alpha: float, sigma: float) -> tuple[float, float]:
    """(σ, s) as stored: σ rounded to float32 (identical on CPU and CUDA), s = float32(α·σ)."""
    sigma32 = float32(sigma)
    return sigma32, float32(alpha * sigma32)


def finish_artifact(tmp: Path, info_name: str) -> ArtifactInfo:
    """Read back the container just written, check it, and add the model card."""
    container = read_container(tmp / FILENAME)
    check_document(container)
    info = artifact_info(container, sha256_file(tmp / FILENAME))
    (tmp / CARD).write_text(render_model_card(info, info_name), encoding="utf-8")
    return info


def result_of(info: ArtifactInfo, dst: Path, bytes_source: int) -> CompressResult:
    return CompressResult(
        path=str(dst),
        kind=info.kind,
        codec=info.codec,
        density=info.density,
        alpha=info.alpha,
        sigma=info.sigma,
        scale=info.scale,
        d=info.d,
        kept=info.kept,
        bytes_source=bytes_source,
        bytes_artifact=info.file_bytes,
        payload_bytes=info.payload_bytes,
        ratio=bytes_source / info.file_bytes,
        ratio_16bit=info.ratio_16bit,
        bits_per_param=info.bits_per_param,
        entropy_bits_per_param=info.entropy_bits_per_param,
        sha256=info.sha256,
    )


def compress(
    src: str | Path,
    dst: str | Path,
    *,
    density: float = 0.1,
    alpha: float = 1.0,
    codec: str = DEFAULT_CODEC,
    device: str | torch.device = "auto",
    base: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> CompressResult:
    """Compress a PEFT adapter directory (or, with ``base``, a full fine-tune) into an artifact directory."""
    k, a = check_density(density), check_alpha(alpha)
    codec_impl = get_codec(codec)
    dev = resolve_device(device)
    dst = Path(dst)
    check_destination(dst, overwrite)
    if Path(src).resolve() == dst.resolve():
        raise InputError(f"{dst}: destination is the source directory")
    if base is not None:
        from compeft.fullmodel import compress_full

        return compress_full(Path(src), dst, Path(base), density=k, alpha=a, codec=codec_impl, device=dev, overwrite=overwrite, progress=progress)
    adapter = read_adapter(src, pinned=dev.type == "cuda")
    if adapter.blob is not None:
        tv = task_vector_from_blob(adapter.blob, adapter.tensors, dev, adapter.path / ADAPTER_WEIGHTS)
    else:
        tv = build_task_vector(adapter.tensors, dev)
    tern = ternarize(tv.tau, k)
    sigma, scale = scale_of(a, tern.sigma)
    payload = codec_impl.encode(tern.signs, [r.numel for r in tv.records])
    carried = {n: adapter.tensors[n] for n in carried_names(adapter.tensors)}
    doc = build_document(
        kind="adapter",
        codec=codec_impl.id,
        density=k,
        alpha=a,
        sigma=sigma,
        scale=scale,
        threshold=tern.threshold,
        kept=tern.kept,
        records=tv.records,
        carried={n: (tuple(t.shape), dtype_name(t.dtype)) for n, t in carried.items()},
        source={
            "files": adapter.source_sha256,
            "peft_type": adapter.peft_type,
            "base_model": adapter.base_model,
            "bytes": adapter.weights_bytes,
        },
        package_version=__version__,
    )
    with atomic_directory(dst, overwrite) as tmp:
        shutil.copyfile(adapter.path / ADAPTER_CONFIG, tmp / ADAPTER_CONFIG)
        write_container(tmp / FILENAME, doc, payload, carried, record_tensors(tv.records))
        info = finish_artifact(tmp, Path(src).resolve().name)
    return result_of(info, dst, adapter.weights_bytes)


def open_artifact(path: str | Path, *, verify: bool = True):
    """Read and check an artifact's container; returns (container, delta records)."""
    container = read_container(path, verify=verify)
    return container, check_document(container)


def decode_ternary(container, device: torch.device) -> torch.Tensor:
    """The ternary τ of a checked container, decoded on ``device``."""
    doc = container.doc
    with named_payload_errors(container.path):
        return get_codec(doc["codec"]).decode(container.payload, doc["d"], device)


def load(path: str | Path, device: str | torch.device = "cpu", *, verify: bool = True) -> dict[str, torch.Tensor]:
    """The reconstructed adapter state dict (file key names, original dtypes) directly on ``device``.

    The fast path: file → pinned memory → one fused decode; delta tensors may be views into one
    buffer (clone them before saving with safetensors, which refuses shared storage).
    """
    from compeft.fastload import load_fast

    return load_fast(path, resolve_device(device), verify=verify)


def inspect(path: str | Path) -> ArtifactInfo:
    """The figures of an artifact (checksums verified)."""
    container, _ = open_artifact(path)
    return artifact_info(container, sha256_file(container.path))


def decompress(
    src: str | Path,
    dst: str | Path,
    *,
    base: str | Path | None = None,
    device: str | torch.device = "auto",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a standard PEFT adapter directory (or, with ``base``, a full model directory) from an artifact."""
    dev = resolve_device(device)
    src, dst = Path(src), Path(dst)
    check_destination(dst, overwrite)
    container, records = open_artifact(src)
    doc = container.doc
    if doc["kind"] == "full":
        if base is None:
            raise InputError(f"{container.path}: a full fine-tune residual needs --base BASE_DIR to decompress")
        from compeft.fullmodel import decompress_full

        return decompress_full(container, records, Path(base), dst, device=dev, overwrite=overwrite, progress=progress)
    if base is not None:
        raise InputError(f"{container.path}: an adapter artifact takes no --base")
    config_path = container.path.parent / ADAPTER_CONFIG
    expected = doc["source"].get("files", {}).get(ADAPTER_CONFIG)
    if not config_path.is_file():
        raise ContainerError(f"{config_path}: missing beside {FILENAME}")
    if expected and sha256_file(config_path) != expected:
        raise ContainerError(f"{config_path}: checksum mismatch with the source hash recorded in {FILENAME}")
    ternary = decode_ternary(container, dev)
    tensors = {n: t.cpu() for n, t in reconstruct(records, ternary, doc["scale"]).items()}
    tensors.update(container.carried)
    with atomic_directory(dst, overwrite) as tmp:
        write_adapter(tmp, config_path.read_bytes(), tensors)
    return dst
