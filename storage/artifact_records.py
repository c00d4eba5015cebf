"""Glue between compeft artifacts and the registry/publishers: options hash, records, provenance."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from storage.hashing import options_hash
from storage.registry.records import ArtifactRecord
from storage.values import AdapterRef, Provenance


def compression_options(*, codec: str, density: float, alpha: float, base: str | None = None) -> dict[str, Any]:
    """The options that, with the source content hash, identify an artifact (the idempotency key)."""
    options: dict[str, Any] = {"codec": codec, "density": float(density), "alpha": float(alpha)}
    if base is not None:
        options["base"] = base
    return options


def artifact_record_for(
    artifact_dir: str | Path, *, source_sha256: str, options: Mapping[str, Any], storage_uri: str | None
) -> ArtifactRecord:
    """Registry record of an artifact directory, with figures read by ``compeft.inspect``."""
    import compeft

    info = compeft.inspect(artifact_dir).to_dict()
    directory = Path(artifact_dir)
    total = sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
    return ArtifactRecord(
        source_sha256=source_sha256,
        options_hash=options_hash(options),
        options=dict(options),
        codec=info["codec"],
        density=float(info["density"]),
        alpha=float(info["alpha"]),
        bytes=total,
        sha256=info["sha256"],
        package_version=info["package_version"],
        sigma=info.get("sigma"),
        scale=info.get("scale"),
        kept=info.get("kept"),
        bits_per_param=info.get("bits_per_param"),
        bytes_source=info.get("source_bytes"),
        ratio=info.get("ratio"),
        storage_uri=storage_uri,
    )


def provenance_for(ref: AdapterRef, record: ArtifactRecord) -> Provenance:
    """Provenance of an artifact made from ``ref`` (for commit messages and object metadata)."""
    return Provenance(
        source_uri=ref.uri.split("@", 1)[0] if ref.uri.startswith("hf://") else ref.uri,
        source_name=ref.name,
        source_revision=ref.revision,
        options=dict(record.options),
        package_version=record.package_version,
        artifact_sha256=record.sha256,
    )
