"""Content-addressed artifact stores (local directory, S3), keyed by the container's sha256."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from storage.addresses import LocalAddress, S3Address, parse_address
from storage.errors import AddressError
from storage.values import StoredArtifact


@runtime_checkable
class ArtifactStore(Protocol):
    """Where compressed artifacts are kept; an artifact is visible only once completely written."""

    uri: str

    def put(self, artifact_dir: Path) -> StoredArtifact:
        """Store the artifact directory (idempotent: an existing sha256 is not rewritten)."""
        ...

    def get(self, sha256: str, dest: Path) -> Path:
        """Copy the artifact into directory ``dest`` (must not exist), verifying every file's hash."""
        ...

    def exists(self, sha256: str) -> bool:
        """True if a complete artifact with this container sha256 is stored."""
        ...

    def uri_for(self, sha256: str) -> str:
        """Where an artifact with this sha256 lives (whether or not it exists yet)."""
        ...


def open_store(uri: str | Path, *, s3_endpoint: str | None = None, s3_client=None) -> ArtifactStore:
    """Open a local-directory or ``s3://BUCKET/PREFIX`` store."""
    address = parse_address(str(uri), s3_endpoint=s3_endpoint)
    if isinstance(address, LocalAddress):
        from storage.stores.local import LocalStore

        return LocalStore(address.path)
    if isinstance(address, S3Address):
        from storage.stores.s3 import S3Store

        return S3Store(address, client=s3_client)
    raise AddressError(f"invalid store address {str(uri)!r}: an artifact store is a local path or s3://BUCKET/PREFIX")


__all__ = ["ArtifactStore", "open_store"]
