"""Frozen value types passed between sources, stores, publishers, the registry and the flows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RemoteFile:
    """One file of an adapter as listed by its source (name relative to the adapter root)."""

    name: str
    size: int | None = None
    etag: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class AdapterRef:
    """A PEFT adapter found by a source, pinned to a revision (Hub commit sha, S3 ETags, local mtimes).

    ``uri`` is a stable address of this adapter (``hf://A/R@SHA``, ``s3://B/KEY_PREFIX``, a path);
    ``name`` is the short name publishers derive destination names from.
    """

    uri: str
    source_uri: str
    name: str
    revision: str | None
    files: tuple[RemoteFile, ...]
    peft_type: str | None
    base_model: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def size(self) -> int:
        """Total bytes of the adapter files (unknown sizes count as 0)."""
        return sum(f.size or 0 for f in self.files)

    @property
    def repo(self) -> str:
        """Repo id or key prefix inside the source (the part of ``uri`` after the scheme)."""
        text = self.uri.split("://", 1)[-1]
        return text.split("@", 1)[0]


@dataclass(frozen=True)
class Skipped:
    """Something a source looked at and did not yield as an adapter, with the reason."""

    uri: str
    reason: str


@dataclass(frozen=True)
class StoredArtifact:
    """An artifact held by a store: where it lives and the sha256 of its compeft.safetensors."""

    uri: str
    sha256: str
    bytes: int
    created: bool


@dataclass(frozen=True)
class Provenance:
    """Where an artifact came from and how it was made; goes into commit messages and metadata.

    Never holds credentials.
    """

    source_uri: str
    source_name: str
    source_revision: str | None
    options: Mapping[str, Any]
    package_version: str
    artifact_sha256: str

    def summary(self) -> str:
        """One line: source@revision, options and package version."""
        opts = ", ".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        rev = f"@{self.source_revision}" if self.source_revision else ""
        return f"ComPEFT {self.source_uri}{rev} ({opts}; compeft {self.package_version})"


@dataclass(frozen=True)
class Publication:
    """Result of publishing one artifact: destination URI, remote revision, whether anything new was written."""

    destination: str
    uri: str
    revision: str | None
    created: bool
