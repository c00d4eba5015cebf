"""The service's rules, in one place and without Prefect: register an adapter, find the work already done for
(content, options), decide whether an adapter needs anything, shape registry records from results, and
describe provenance. The flows only sequence these calls."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from compeft.version import __version__
from storage.adapter_facts import adapter_record
from storage.addresses import hub_uri
from storage.fullmodels import FULL, full_record
from storage.hashing import content_hash
from storage.registry import (
    AdapterRow,
    ArtifactRecord,
    ArtifactRow,
    CalibrationRecord,
    CalibrationRow,
    PublicationRow,
    Registry,
)
from storage.values import AdapterRef, Provenance, Publication, Skipped, StoredArtifact

Status = Literal["compressed", "existing", "skipped", "failed"]


def source_kind(uri: str) -> str:
    """local, s3 or hf, from an address string."""
    return "s3" if uri.startswith("s3://") else "hf" if uri.startswith("hf://") else "local"


@dataclass(frozen=True)
class ExistingWork:
    """The artifact already registered for (content, options), where it is published, and its calibration."""

    artifact: ArtifactRow
    publications: Mapping[str, str] = field(default_factory=dict)  # destination → uri
    calibration: CalibrationRow | None = None

    def usable(self, calibrating: bool) -> bool:
        """An artifact counts as done unless its calibration record was lost (a crash in between)."""
        return self.calibration is not None or not calibrating

    def done(self, calibrating: bool, publish_to: str | None) -> bool:
        """Nothing left to do: usable, and published where asked."""
        return self.usable(calibrating) and (not publish_to or publish_to in self.publications)


@dataclass(frozen=True)
class AdapterOutcome:
    """What happened to one adapter in a run."""

    uri: str
    name: str
    status: Status
    reason: str | None = None
    artifact: ArtifactRow | None = None
    score_original: float | None = None
    score_compressed: float | None = None
    published_uri: str | None = None
    duplicate_of: int | None = None  # the earlier artifact this one nearly repeats (issue 14)
    duplicate_cosine: float | None = None

    @property
    def link(self) -> str | None:
        """Where the artifact can be fetched: its publication, else its stored copy."""
        return self.published_uri or (self.artifact.storage_uri if self.artifact else None)

    def fields(self) -> dict[str, Any]:
        """The outcome as flat JSON fields (what a flow returns and its table artifact carries)."""
        art = self.artifact
        return {
            "uri": self.uri, "name": self.name, "status": self.status, "reason": self.reason,
            "artifact_id": art.id if art else None, "bytes_source": art.bytes_source if art else None,
            "bytes_artifact": art.bytes if art else None, "ratio": art.ratio if art else None,
            "bits_per_param": art.bits_per_param if art else None, "density": art.density if art else None,
            "alpha": art.alpha if art else None, "score_original": self.score_original,
            "score_compressed": self.score_compressed, "storage_uri": art.storage_uri if art else None,
            "published_uri": self.published_uri, "duplicate_of": self.duplicate_of,
            "duplicate_cosine": self.duplicate_cosine,
        }

    @classmethod
    def from_fields(cls, registry: Registry, fields: Mapping[str, Any]) -> AdapterOutcome:
        """The outcome ``fields()`` described (its artifact read back from the registry)."""
        artifact = registry.get_artifact(fields["artifact_id"]).artifact if fields.get("artifact_id") else None
        return cls(uri=fields["uri"], name=fields["name"], status=fields["status"], reason=fields.get("reason"),
                   artifact=artifact, score_original=fields.get("score_original"),
                   score_compressed=fields.get("score_compressed"), published_uri=fields.get("published_uri"),
                   duplicate_of=fields.get("duplicate_of"), duplicate_cosine=fields.get("duplicate_cosine"))


def crawl(source) -> tuple[list[AdapterRef], list[Skipped]]:
    """Every adapter a source (``storage.sources.Source``) lists, and every candidate it skipped (no weights read)."""
    found: list[AdapterRef] = []
    skipped: list[Skipped] = []
    for entry in source.iter_adapters():
        (skipped if isinstance(entry, Skipped) else found).append(entry)
    return found, skipped


def known_content(registry: Registry, ref: AdapterRef) -> str | None:
    """The content sha256 of an adapter without downloading it: from the listing's hashes of its layout's files
    (every one of them, whichever layout), else from a registered adapter with the same URI and revision (commit
    sha, ETags, content hash)."""
    if _fully_hashed(ref):
        return content_hash({f.name: f.sha256 for f in ref.files})
    if not ref.revision:
        return None
    return registry.find_adapter_content(ref.uri, ref.revision)


def known_work(registry: Registry, items: Sequence[tuple[AdapterRef, str]]) -> list[ExistingWork | None]:
    """For each (adapter, options key): the work registered for it when its content is known without a download
    (``known_content``), else None; a few queries for the whole list, whatever its length."""
    listed = [(ref, content_hash({f.name: f.sha256 for f in ref.files}) if _fully_hashed(ref) else None, key)
              for ref, key in items]
    revisions = registry.find_adapter_contents([(ref.uri, ref.revision) for ref, content, _ in listed
                                                if content is None and ref.revision])
    pairs = [(content or revisions.get((ref.uri, ref.revision or "")), key) for ref, content, key in listed]
    found = registry.find_work([(c, k) for c, k in pairs if c])
    return [_existing(found[(c, k)]) if c and (c, k) in found else None for c, k in pairs]


def _fully_hashed(ref: AdapterRef) -> bool:
    """The listing hashed every file of the adapter's layout."""
    return bool(ref.files) and all(f.sha256 for f in ref.files)


def _existing(detail) -> ExistingWork:
    return ExistingWork(detail.artifact, {p.destination: p.uri for p in detail.publications},
                        detail.calibrations[-1] if detail.calibrations else None)


def existing_work(registry: Registry, content_sha256: str, key: str) -> ExistingWork | None:
    """The work registered for this content under this options key, or None."""
    row = registry.find_artifact(content_sha256, key)
    if row is None:
        return None
    return _existing(registry.get_artifact(row.id))


CATALOG_PREFIX = "catalog:"


def base_model_name(ref: AdapterRef, base: str | None) -> str | None:
    """How the registry names an adapter's base model (``base``: the adapter config's, else the run's option):
    a Hub id as it is; a path (``./``, ``../``, absolute, or an existing directory beside a local adapter)
    inside the catalog as ``catalog:PATH`` relative to the catalog root; a path outside it as an absolute
    path (local catalogs) or as written (remote ones); nothing as None."""
    if not base:
        return None
    kind = source_kind(ref.source_uri)
    looks_like_path = base.startswith(("./", "../", "/", "~")) or base in (".", "..")
    if kind == "local":
        adapter = Path(ref.uri)
        if not looks_like_path and not (adapter / base).is_dir():
            return base
        path = Path(os.path.normpath(adapter / Path(base).expanduser()))
        root = Path(ref.source_uri)
        return CATALOG_PREFIX + path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    if kind == "s3" and looks_like_path and not base.startswith(("/", "~")):
        path = posixpath.normpath(posixpath.join(ref.uri.split("://", 1)[1], base))
        root = ref.source_uri.split("://", 1)[1].rstrip("/")
        if path.startswith(root + "/"):
            return CATALOG_PREFIX + path[len(root) + 1:]
    return base


def register_adapter(registry: Registry, adapter_dir: Path, ref: AdapterRef, base: str | None = None) -> AdapterRow:
    """Record the source and the fetched adapter (hashes, type, rank, ...; its base model named by
    ``base_model_name``, ``base`` when the adapter names none); idempotent."""
    source = registry.get_or_create_source(ref.source_uri, source_kind(ref.source_uri))
    if ref.peft_type == FULL:
        record = full_record(adapter_dir, uri=ref.uri, repo=ref.repo, revision=ref.revision, base_model=ref.base_model,
                             subfolder=ref.subfolder)
    else:
        record = adapter_record(adapter_dir, uri=ref.uri, repo=ref.repo, revision=ref.revision, subfolder=ref.subfolder)
    record = replace(record, base_model=base_model_name(ref, record.base_model or base))
    return registry.get_or_create_adapter(record, source_id=source.id)


def register_artifact(registry: Registry, adapter: AdapterRow, info, stored: StoredArtifact,
                      key_fields: Mapping[str, Any], key: str) -> ArtifactRow:
    """Record an artifact (``info``: its compeft ArtifactInfo); an existing (content, options) row is kept."""
    record = ArtifactRecord(
        source_sha256=adapter.content_sha256, options_hash=key, options=dict(key_fields), codec=info.codec,
        density=info.density, alpha=info.alpha, bytes=info.bytes_artifact, sha256=stored.sha256,
        package_version=info.package_version, sigma=info.sigma, scale=info.scale, kept=info.kept,
        bits_per_param=info.bits_per_param, bytes_source=info.bytes_source, ratio=info.ratio, storage_uri=stored.uri,
    )
    row, _ = registry.get_or_create_artifact(adapter.id, record)
    return row


def register_calibration(registry: Registry, artifact: ArtifactRow, result) -> CalibrationRow:
    """Record one calibration sweep (``result``: a compeft.calibrate CalibrationResult)."""
    return registry.add_calibration(artifact.id, CalibrationRecord(
        task=result.task, metric=result.metric,
        scores=tuple({"density": p.density, "alpha": p.alpha, "score": p.score, "stderr": p.stderr, "bytes": p.bytes}
                     for p in result.points),
        chosen_density=result.chosen.density, chosen_alpha=result.chosen.alpha, chosen_score=result.chosen.score,
        original_score=result.reference.value, runtime_s=result.timings.total if result.timings else None,
    ))


def register_publication(registry: Registry, artifact: ArtifactRow, publication: Publication) -> PublicationRow:
    """Record where an artifact was published (idempotent per destination and revision)."""
    row, _ = registry.get_or_create_publication(artifact.id, publication.destination, publication.uri, publication.revision)
    return row


def provenance(ref: AdapterRef, key_fields: Mapping[str, Any], sha256: str) -> Provenance:
    """Where an artifact made from ``ref`` came from (commit messages and object metadata; no credentials)."""
    return Provenance(
        source_uri=hub_uri(ref.repo, None, ref.subfolder) if ref.uri.startswith("hf://") else ref.uri,
        source_name=ref.repo_name, source_revision=ref.revision, options=dict(key_fields),
        package_version=__version__, artifact_sha256=sha256, subfolder=ref.subfolder,
    )


def outcome(ref: AdapterRef, status: Status, artifact: ArtifactRow | None = None, *,
            calibration: CalibrationRow | None = None, published_uri: str | None = None,
            reason: str | None = None) -> AdapterOutcome:
    """The outcome of one adapter, with the scores of its calibration (if any)."""
    return AdapterOutcome(
        uri=ref.uri, name=ref.name, status=status, reason=reason, artifact=artifact,
        score_original=calibration.original_score if calibration else None,
        score_compressed=calibration.chosen_score if calibration else None, published_uri=published_uri,
    )


def counts(outcomes: list[AdapterOutcome]) -> dict[str, int]:
    """Adapters per status."""
    result = {"compressed": 0, "existing": 0, "skipped": 0, "failed": 0}
    for o in outcomes:
        result[o.status] += 1
    return result


def failures(outcomes: list[AdapterOutcome]) -> list[dict[str, Any]]:
    """The failed and skipped adapters with their reasons (the run record's errors)."""
    return [{"uri": o.uri, "name": o.name, "status": o.status, "reason": o.reason}
            for o in outcomes if o.status in ("failed", "skipped")]


def with_duplicate_marks(registry: Registry, outcomes: list[AdapterOutcome]) -> list[AdapterOutcome]:
    """The outcomes with the near-duplicate marks the registry holds for their artifacts (issue 14)."""
    from dataclasses import replace

    marks = registry.duplicate_marks(sorted({o.artifact.id for o in outcomes if o.artifact is not None}))
    return [replace(o, duplicate_of=marks[o.artifact.id][0], duplicate_cosine=marks[o.artifact.id][1])
            if o.artifact is not None and o.artifact.id in marks else o for o in outcomes]
