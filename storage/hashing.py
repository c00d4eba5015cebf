"""Content hashes: file sha256, adapter content hash, compression-options hash (idempotency keys)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_CHUNK = 1024 * 1024


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hashes(directory: str | Path, names: list[str] | None = None) -> dict[str, str]:
    """Map file name -> sha256 for ``names`` (default: every regular file directly in ``directory``)."""
    root = Path(directory)
    chosen = names if names is not None else sorted(p.name for p in root.iterdir() if p.is_file())
    return {name: sha256_file(root / name) for name in sorted(chosen)}


def content_hash(hashes: Mapping[str, str]) -> str:
    """One sha256 naming a set of files by their names and contents (order independent)."""
    canonical = "\n".join(f"{name}\0{digest}" for name, digest in sorted(hashes.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces, so equal values hash equally."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def options_hash(options: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of compression options (codec, density, alpha, base, ...)."""
    normalized = {k: (float(v) if isinstance(v, int) and not isinstance(v, bool) else v) for k, v in options.items()}
    return hashlib.sha256(canonical_json(normalized).encode()).hexdigest()
