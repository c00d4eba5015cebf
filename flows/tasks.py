"""Prefect tasks: each one call into ``compeft``/``storage`` (via :mod:`flows.library`).

Tasks exchange references only (URIs, paths, ids, small dicts). Network-facing tasks retry, and only
on :class:`storage.errors.TransientError` (network, 429/5xx): bad input fails at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from flows import library
from flows.params import AdapterItem, CompressionOptions, ServiceConfig
from storage.errors import TransientError

TRANSIENT_RETRIES = 3
RETRY_DELAYS = [2, 10, 30]


def only_transient(task_obj: Any, task_run: Any, state: Any) -> bool:
    """Retry condition: retry a failed task only when it failed with a TransientError."""
    return isinstance(getattr(state, "data", None), TransientError)


def _network(fn):
    return task(fn, retries=TRANSIENT_RETRIES, retry_delay_seconds=RETRY_DELAYS,
                retry_condition_fn=only_transient, cache_policy=NO_CACHE)


def _local(fn):
    return task(fn, cache_policy=NO_CACHE)


@_network
def crawl_source(source: str, config: ServiceConfig) -> tuple[list[AdapterItem], list[dict[str, str]]]:
    """List the adapters under a source (no weights downloaded) and the skipped candidates."""
    return library.crawl(source, config)


@_network
def fetch_adapter(item: AdapterItem, dest: str, config: ServiceConfig) -> str:
    """Download one adapter's files into a local work directory."""
    return str(library.fetch(item, Path(dest), config))


@_local
def register_adapter(database_url: str | None, adapter_dir: str, item: AdapterItem) -> dict[str, Any]:
    """Record the fetched adapter in the registry (idempotent)."""
    return library.register_adapter(database_url, Path(adapter_dir), item)


@_local
def find_existing(database_url: str | None, content_sha256: str, options_hash: str) -> dict[str, Any] | None:
    """The artifact already made from this content with these options, if any."""
    return library.existing_state(database_url, content_sha256, options_hash)


@_local
def known_content(database_url: str | None, item: AdapterItem) -> str | None:
    """The adapter's content hash if the listing or the registry already knows it (no download)."""
    return library.known_content(database_url, item)


@_local
def compress_adapter_dir(adapter_dir: str, out_dir: str, options: CompressionOptions) -> dict[str, Any]:
    """Compress one adapter at the fixed (density, α) into an artifact directory."""
    from compeft.api import compress

    return compress(adapter_dir, out_dir, density=options.density, alpha=options.alpha,
                    codec=options.codec, device=options.device).to_dict()


@_local
def calibrate_adapter_dir(adapter_dir: str, out_dir: str, base: str, task_name: str,
                          options: CompressionOptions, session: Any = None) -> dict[str, Any]:
    """Choose α (and k) on a validation task and write the artifact at the chosen point (on the
    batch's already-loaded base when ``session``, a ``compeft.calibrate.BaseModelSession``, is given)."""
    from flows.calibration import calibrate

    return calibrate(adapter_dir, out_dir, base=base, task=task_name, options=options, session=session)


@_network
def store_artifact(out_dir: str, store_uri: str | None, s3_endpoint: str | None) -> dict[str, Any]:
    """Put the artifact directory into the content-addressed store."""
    stored = library.store(store_uri, s3_endpoint).put(Path(out_dir))
    return {"uri": stored.uri, "sha256": stored.sha256, "bytes": stored.bytes, "created": stored.created}


@_local
def register_artifact(database_url: str | None, adapter_id: int, record: dict[str, Any]) -> dict[str, Any]:
    """Record the artifact; an existing (content, options) row is returned instead of duplicated."""
    from storage.registry import ArtifactRecord

    row, created = library.registry(database_url).get_or_create_artifact(adapter_id, ArtifactRecord(**record))
    return {"artifact": row.to_dict(), "created": created}


@_local
def register_calibration(database_url: str | None, artifact_id: int, record: dict[str, Any]) -> int:
    """Record one calibration sweep of an artifact."""
    from storage.registry import CalibrationRecord

    record = dict(record, scores=tuple(record["scores"]))
    return library.registry(database_url).add_calibration(artifact_id, CalibrationRecord(**record)).id


@_network
def fetch_stored_artifact(store_uri: str | None, s3_endpoint: str | None, sha256: str, dest: str) -> str:
    """Copy a stored artifact out of the store (hash-verified), to publish it."""
    return str(library.fetch_stored(store_uri, s3_endpoint, sha256, Path(dest)))


@_network
def publish_artifact(artifact_dir: str, destination: str, item: AdapterItem, options: dict[str, Any],
                     sha256: str, config: ServiceConfig) -> dict[str, Any]:
    """Publish the artifact to the destination (no new commit/object when it is already there)."""
    pub = library.publish(Path(artifact_dir), destination, library.provenance(item, options, sha256), config)
    return {"destination": pub.destination, "uri": pub.uri, "revision": pub.revision, "created": pub.created}


@_local
def register_publication(database_url: str | None, artifact_id: int, publication: dict[str, Any]) -> int:
    """Record where the artifact was published (idempotent per destination and revision)."""
    row, _ = library.registry(database_url).get_or_create_publication(
        artifact_id, publication["destination"], publication["uri"], publication["revision"])
    return row.id


@_local
def start_run(database_url: str | None, flow_run_id: str, parameters: dict[str, Any]) -> None:
    """Record this flow run in the registry's runs table."""
    library.registry(database_url).start_run(flow_run_id, parameters)


@_local
def finish_run(database_url: str | None, flow_run_id: str, status: str, counts: dict[str, int],
               errors: list[dict[str, Any]]) -> None:
    """Record the run's final status, counts and per-adapter failures."""
    library.registry(database_url).finish_run(flow_run_id, status, counts, errors)
