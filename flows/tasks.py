"""The steps of a run, each one call into ``compeft`` or ``storage``, exchanging typed values (references, rows,
results), never tensors or ad-hoc dicts.

Steps done once per run (``start_run``, ``crawl_source``, ``plan_work``, ``finish_run``) are Prefect tasks. The
per-adapter steps (fetch, register, compress or calibrate, store, publish) are plain calls inside the one
Prefect task run each adapter gets (``flows.batch.process_adapter``): a task run costs tens of milliseconds of
API round trips and events, as much as compressing a small adapter, so one per adapter and not one per step.
None retries: storage's RetryPolicy owns the retries of every network call (Hub and S3), so a step that fails
has already been retried as far as it is worth."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from compeft.artifact import ArtifactInfo
from compeft.config import CalibrationConfig, CompressionConfig
from storage import catalog
from storage.catalog import ExistingWork
from storage.config import ServiceConfig
from storage.registry import AdapterRow, ArtifactRow, CalibrationRow, PublicationRow
from storage.values import AdapterRef, Publication, Skipped, StoredArtifact

step = task(cache_policy=NO_CACHE)


@step
def crawl_source(source: str, service: ServiceConfig) -> tuple[list[AdapterRef], list[Skipped]]:
    """List the adapters under a source (no weights downloaded) and the skipped candidates."""
    return catalog.crawl(service.source(source))


@step
def plan_work(service: ServiceConfig, items: list[tuple[AdapterRef, str]]) -> list[ExistingWork | None]:
    """For each (adapter, options key) the work already registered, where its content is known without a download."""
    return catalog.known_work(service.registry(), items)


def known_work(service: ServiceConfig, ref: AdapterRef, key: str) -> ExistingWork | None:
    """The work registered for this adapter and options, when its content is known without a download."""
    return catalog.known_work(service.registry(), [(ref, key)])[0]


def fetch_adapter(ref: AdapterRef, dest: Path, service: ServiceConfig) -> Path:
    """Download one adapter's files into a local work directory."""
    return service.source(ref.source_uri).fetch(ref, dest)


def register_adapter(service: ServiceConfig, adapter_dir: Path, ref: AdapterRef, base: str | None = None) -> AdapterRow:
    """Record the fetched adapter in the registry (idempotent; ``base``: the run's base model option)."""
    return catalog.register_adapter(service.registry(), adapter_dir, ref, base)


def find_existing(service: ServiceConfig, content_sha256: str, key: str) -> ExistingWork | None:
    """The work already registered for this content and options."""
    return catalog.existing_work(service.registry(), content_sha256, key)


def compress_adapter(adapter_dir: Path, out_dir: Path, config: CompressionConfig, base: Path | None = None) -> ArtifactInfo:
    """Compress one adapter at a fixed (k, α) into an artifact directory (a full fine-tune against ``base``)."""
    from compeft.api import compress

    return compress(adapter_dir, out_dir, config, base=base)


def fetch_base(base: str) -> Path:
    """A full fine-tune's base model as a local directory (a Hub id is fetched into the Hub cache once)."""
    from compeft.calibrate.model import local_base_dir

    return local_base_dir(base)


def calibrate_adapter(adapter_dir: Path, out_dir: Path, config: CalibrationConfig, session=None):
    """Choose (k, α) on a validation task and write the artifact at the chosen point (on the batch's loaded
    base when ``session``, a ``compeft.calibrate.BaseModelSession``, is given); a CalibrationResult."""
    from compeft.calibrate import calibrate

    return calibrate(adapter_dir, out_dir, config, session=session)


def store_artifact(out_dir: Path, service: ServiceConfig) -> StoredArtifact:
    """Put the artifact directory into the content-addressed store."""
    return service.artifact_store().put(out_dir)


def register_artifact(service: ServiceConfig, adapter: AdapterRow, info: ArtifactInfo, stored: StoredArtifact,
                      config: CompressionConfig | CalibrationConfig) -> ArtifactRow:
    """Record the artifact; an existing (content, options) row is returned instead of duplicated."""
    return catalog.register_artifact(service.registry(), adapter, info, stored, config.key_fields(), config.key())


def register_calibration(service: ServiceConfig, artifact: ArtifactRow, result) -> CalibrationRow:
    """Record one calibration sweep of an artifact."""
    return catalog.register_calibration(service.registry(), artifact, result)


def fetch_stored_artifact(service: ServiceConfig, sha256: str, dest: Path) -> Path:
    """Copy a stored artifact out of the store (hash-verified), to publish it."""
    return service.artifact_store().get(sha256, dest)


def publish_artifact(artifact_dir: Path, service: ServiceConfig, ref: AdapterRef,
                     config: CompressionConfig | CalibrationConfig, sha256: str) -> Publication:
    """Publish the artifact to the service's destination (no new commit/object when it is already there)."""
    return service.publisher().publish(artifact_dir, catalog.provenance(ref, config.key_fields(), sha256))


def register_publication(service: ServiceConfig, artifact: ArtifactRow, publication: Publication) -> PublicationRow:
    """Record where the artifact was published."""
    return catalog.register_publication(service.registry(), artifact, publication)


@step
def start_run(service: ServiceConfig, flow_run_id: str, parameters: dict) -> None:
    """Record this flow run in the registry's runs table."""
    service.registry().start_run(flow_run_id, parameters)


@step
def finish_run(service: ServiceConfig, flow_run_id: str, outcomes: list[catalog.AdapterOutcome]) -> None:
    """Record the run's final status, counts and per-adapter failures."""
    service.registry().finish_run(flow_run_id, "completed", catalog.counts(outcomes), catalog.failures(outcomes))


def mark_near_duplicate(service: ServiceConfig, artifact: ArtifactRow, out_dir: Path, device: str = "cpu"):
    """Sign the new artifact for search and mark it when it nearly repeats an earlier one (issue 14)."""
    import tempfile

    from compeft.ops.planes import open_planes
    from storage import operations

    planes = open_planes(out_dir, device)
    registry = service.registry()
    if service.near_duplicate_cosine is None:
        return operations.sign(registry, artifact, planes)
    with tempfile.TemporaryDirectory(prefix="compeft-dup-") as work:
        return operations.mark_near_duplicate(registry, service.artifact_store(), artifact, planes,
                                              service.near_duplicate_cosine, Path(work))
