"""Frozen value types passed between sources, stores, publishers, the registry and the flows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Which ``checkpoint-N/`` training folders a crawl takes: the final adapter (else the latest checkpoint), or all.
CHECKPOINT_CHOICES = ("final", "all")


@dataclass(frozen=True)
class RemoteFile:
    """One file of an adapter as listed by its source (name relative to the adapter root)."""

    name: str
    size: int | None = None
    etag: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class AdapterRef:
    """An adapter found by a source, pinned to a revision (Hub commit sha, S3 ETags, local content hash).

    ``uri`` is a stable address of this adapter (``hf://A/R@SHA[/SUB]``, ``s3://B/KEY_PREFIX``, a path);
    ``subfolder`` is its folder inside its repo ('' at the root: a Hub repo, or for a tree or bucket the folder
    directly below the source, or the source itself when it holds an adapter); ``name`` is how runs show it and
    per-adapter options name it (the repo's short name, then ``/SUBFOLDER``); ``layout`` names the
    ``compeft.adapters.Layout`` its files follow; ``dtype`` is its weights' dtypes when the listing told them.
    """

    uri: str
    source_uri: str
    name: str
    revision: str | None
    files: tuple[RemoteFile, ...]
    peft_type: str | None
    base_model: str | None = None
    config: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    subfolder: str = ""
    layout: str = "peft"
    dtype: str | None = None

    @property
    def size(self) -> int:
        """Total bytes of the adapter files (unknown sizes count as 0)."""
        return sum(f.size or 0 for f in self.files)

    @property
    def repo(self) -> str:
        """Repo id, or the key prefix / path of its repo folder (the part of ``uri`` after the scheme, without
        the revision and the subfolder)."""
        text = self.uri.split("://", 1)[-1]
        if self.uri.startswith("hf://"):
            return "/".join(text.split("@", 1)[0].split("/")[:2])
        if self.subfolder and text.endswith("/" + self.subfolder):
            return text[: -len(self.subfolder) - 1]
        return text

    @property
    def repo_name(self) -> str:
        """The repo's short name (what publishers name destinations after; the subfolder goes below it)."""
        suffix = "/" + self.subfolder
        return self.name[: -len(suffix)] if self.subfolder and self.name.endswith(suffix) else self.name


def adapter_name(repo_name: str, subfolder: str) -> str:
    """An adapter's name: its repo's short name, then ``/SUBFOLDER`` for an adapter below the repo's root."""
    return f"{repo_name}/{subfolder}" if subfolder else repo_name


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
    subfolder: str = ""  # the adapter's folder inside its source repo: publishers keep it below the destination

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
