"""The single calls into ``compeft`` and ``storage`` that the flow tasks make. Nothing here imports Prefect.

Registries and stores are opened once per process and cached by URL, so tasks pass URLs, not objects.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flows.params import AdapterItem, CompressionOptions, ServiceConfig
from storage.values import AdapterRef, Provenance, Publication, Skipped

STORE_ENV = "COMPEFT_STORE"


def compeft_home() -> Path:
    """COMPEFT_HOME or ~/.compeft (the embedded default for every piece of local state)."""
    from storage.registry.db import compeft_home as home

    return home()


def resolve_store(uri: str | None) -> str:
    """Artifact store address: explicit, else COMPEFT_STORE, else COMPEFT_HOME/artifacts."""
    return uri or os.environ.get(STORE_ENV) or str(compeft_home() / "artifacts")


def registry(url: str | None):
    """The process-wide registry for ``url`` (None: COMPEFT_DATABASE_URL or the embedded SQLite)."""
    from storage.registry.db import resolve_database_url

    return _registry(resolve_database_url(url))


@functools.lru_cache(maxsize=8)
def _registry(url: str):
    from storage.registry import open_registry

    return open_registry(url)


def store(uri: str | None, s3_endpoint: str | None):
    """The process-wide artifact store for ``uri`` (None: COMPEFT_STORE or COMPEFT_HOME/artifacts)."""
    return _store(resolve_store(uri), s3_endpoint)


@functools.lru_cache(maxsize=8)
def _store(uri: str, s3_endpoint: str | None):
    from storage.stores import open_store

    return open_store(uri, s3_endpoint=s3_endpoint)


def source_kind(uri: str) -> str:
    """local, s3 or hf, from an address string."""
    return "s3" if uri.startswith("s3://") else "hf" if uri.startswith("hf://") else "local"


def open_source(uri: str, config: ServiceConfig):
    from storage.sources import open_source as open_

    return open_(uri, s3_endpoint=config.s3_endpoint, hf_endpoint=config.hf_endpoint)


def crawl(uri: str, config: ServiceConfig) -> tuple[list[AdapterItem], list[dict[str, str]]]:
    """Every adapter found under ``uri`` (as references) and every skipped candidate with its reason."""
    found: list[AdapterItem] = []
    skipped: list[dict[str, str]] = []
    for entry in open_source(uri, config).iter_adapters():
        if isinstance(entry, Skipped):
            skipped.append({"uri": entry.uri, "reason": entry.reason})
        else:
            found.append(AdapterItem.from_ref(entry))
    return found, skipped


def fetch(item: AdapterItem, dest: Path, config: ServiceConfig) -> Path:
    """Download the adapter files of one reference into ``dest`` (verified by the source)."""
    return open_source(item.source_uri, config).fetch(item.to_ref(), dest)


def resolve_base(item: AdapterItem, options: CompressionOptions) -> str | None:
    """The base model of an adapter for calibration: the option, else its config (relative paths
    resolved against a local adapter directory), else None."""
    base = options.base or item.base_model
    if not base:
        return None
    if source_kind(item.uri) == "local" and base.startswith((".", "/")):
        return str((Path(item.uri) / base).resolve()) if not base.startswith("/") else base
    return base


def provenance(item: AdapterItem, options: Mapping[str, Any], sha256: str) -> Provenance:
    from compeft import __version__

    return Provenance(
        source_uri=item.uri.split("@", 1)[0] if item.uri.startswith("hf://") else item.uri,
        source_name=item.name, source_revision=item.revision, options=dict(options),
        package_version=__version__, artifact_sha256=sha256,
    )


def publish(artifact_dir: Path, destination: str, prov: Provenance, config: ServiceConfig) -> Publication:
    """Publish an artifact directory to ``destination`` (hub org, S3 prefix or local directory)."""
    from storage.publishers import open_publisher

    publisher = open_publisher(destination, s3_endpoint=config.s3_endpoint, hf_endpoint=config.hf_endpoint)
    return publisher.publish(Path(artifact_dir), prov)


def fetch_stored(store_uri: str | None, s3_endpoint: str | None, sha256: str, dest: Path) -> Path:
    """Copy a stored artifact into ``dest`` (hash-verified) for publishing."""
    return store(store_uri, s3_endpoint).get(sha256, dest)


def as_ref(item: AdapterItem) -> AdapterRef:
    return item.to_ref()


def register_adapter(database_url: str | None, adapter_dir: Path, item: AdapterItem) -> dict[str, Any]:
    """Record the source and the fetched adapter (hashes, type, rank, ...) in the registry; idempotent."""
    from storage.adapter_facts import adapter_record

    reg = registry(database_url)
    source = reg.get_or_create_source(item.source_uri, source_kind(item.source_uri))
    record = adapter_record(adapter_dir, uri=item.uri, repo=item.to_ref().repo, revision=item.revision)
    row = reg.get_or_create_adapter(record, source_id=source.id)
    return {"adapter_id": row.id, "content_sha256": row.content_sha256, "bytes": row.bytes}


def existing_state(database_url: str | None, content_sha256: str, options_hash: str) -> dict[str, Any] | None:
    """The registered artifact for (content, options) with its publications and calibration count, or None."""
    reg = registry(database_url)
    row = reg.find_artifact(content_sha256, options_hash)
    if row is None:
        return None
    detail = reg.get_artifact(row.id)
    cal = detail.calibrations[-1] if detail.calibrations else None
    return {
        "artifact": row.to_dict(),
        "destinations": sorted({p.destination: p.uri for p in detail.publications}.items()),
        "calibrated": cal is not None,
        "score_original": cal.original_score if cal else None,
        "score_compressed": cal.chosen_score if cal else None,
    }


def known_content(database_url: str | None, item: AdapterItem) -> str | None:
    """The content sha256 of an adapter without downloading it: from the listing's file hashes, else
    from a registered adapter with the same URI and revision (commit sha, ETags, content hash)."""
    if (listed := item.known_content_sha256()) is not None:
        return listed
    if not item.revision:
        return None
    return registry(database_url).find_adapter_content(item.uri, item.revision)
