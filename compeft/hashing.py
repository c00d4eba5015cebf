"""sha256 of files, read in chunks (the one helper the library and the service use)."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 22


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    buf = memoryview(bytearray(CHUNK))  # one buffer: a fresh 4 MB block per read would be page-faulted in each time
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(buf[:n])
    return digest.hexdigest()
