"""sha256 of files, read in chunks (the one helper the library and the service use)."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 22


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()
