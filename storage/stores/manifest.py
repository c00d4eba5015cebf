"""The MANIFEST.json written last into every stored artifact: file names, sizes and sha256s."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compeft.atomic import atomic_directory
from compeft.hashing import sha256_file
from storage.errors import HashMismatchError, StoreError, ValidationError
from storage.validation import validate_file_name

CONTAINER = "compeft.safetensors"
MANIFEST = "MANIFEST.json"
FORMAT = "compeft-store/1"
_SHA = re.compile(r"^[0-9a-f]{64}$")


def check_sha(sha256: str) -> str:
    """Return ``sha256`` if it is 64 lowercase hex digits."""
    if not isinstance(sha256, str) or not _SHA.match(sha256):
        raise ValidationError(f"invalid artifact sha256 {sha256!r}: expected 64 lowercase hex digits")
    return sha256


@dataclass(frozen=True)
class Manifest:
    """Container sha256 plus (name -> (size, sha256)) of every file in the artifact."""

    sha256: str
    files: dict[str, tuple[int, str]]

    def to_bytes(self) -> bytes:
        body = {
            "format": FORMAT,
            "sha256": self.sha256,
            "files": {n: {"size": s, "sha256": h} for n, (s, h) in sorted(self.files.items())},
        }
        return json.dumps(body, indent=2, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> Manifest:
        try:
            body = json.loads(data)
            if body.get("format") != FORMAT:
                raise ValueError(f"unknown format {body.get('format')!r}")
            files = {validate_file_name(n): (int(v["size"]), check_sha(v["sha256"])) for n, v in body["files"].items()}
            return cls(sha256=check_sha(body["sha256"]), files=files)
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError) as err:
            raise StoreError(f"{where}: malformed {MANIFEST}: {err}") from err


def build_manifest(artifact_dir: Path) -> Manifest:
    """Hash every file of an artifact directory (flat, safe names, must hold compeft.safetensors)."""
    root = Path(artifact_dir)
    if not (root / CONTAINER).is_file():
        raise StoreError(f"{root}: not an artifact directory (no {CONTAINER})")
    files: dict[str, tuple[int, str]] = {}
    for path in sorted(root.iterdir()):
        if path.is_dir() or path.is_symlink():
            raise StoreError(f"{path}: artifact directories must be flat and hold no links")
        if path.name == MANIFEST:
            continue
        validate_file_name(path.name)
        files[path.name] = (path.stat().st_size, sha256_file(path))
    return Manifest(sha256=files[CONTAINER][1], files=files)


def verify_file(path: Path, name: str, manifest: Manifest, where: str) -> None:
    """Raise HashMismatchError unless ``path`` has the size and sha256 the manifest records for ``name``."""
    size, digest = manifest.files[name]
    actual_size = path.stat().st_size
    if actual_size != size:
        raise HashMismatchError(f"{where}/{name}: size {actual_size} != recorded {size}")
    actual = sha256_file(path)
    if actual != digest:
        raise HashMismatchError(f"{where}/{name}: sha256 {actual} != recorded {digest}")


def materialize(manifest: Manifest, dest: Path, fetch: Callable[[str, Path], None], label: str) -> Path:
    """Fetch every file of an artifact into ``dest`` through a hidden staging directory, checking each
    hash; ``dest`` appears only complete and verified."""
    dest = Path(dest)
    if dest.exists():
        raise StoreError(f"{dest}: destination already exists")
    try:
        with atomic_directory(dest) as tmp:
            for name in manifest.files:
                fetch(name, tmp / name)
                verify_file(tmp / name, name, manifest, label)
    except OSError as err:
        raise StoreError(f"writing artifact {label} to {dest} failed: {err}") from err
    return dest
