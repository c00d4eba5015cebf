"""Content hashes of adapter files: per-file sha256s and the one hash naming a set of files (the registry's
content key; the options key is compeft.config's)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from compeft.hashing import sha256_file


def file_hashes(directory: str | Path, names: list[str] | None = None) -> dict[str, str]:
    """Map file name -> sha256 for ``names`` (default: every regular file directly in ``directory``)."""
    root = Path(directory)
    chosen = names if names is not None else sorted(p.name for p in root.iterdir() if p.is_file())
    return {name: sha256_file(root / name) for name in sorted(chosen)}


def content_hash(hashes: Mapping[str, str]) -> str:
    """One sha256 naming a set of files by their names and contents (order independent)."""
    canonical = "\n".join(f"{name}\0{digest}" for name, digest in sorted(hashes.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()
