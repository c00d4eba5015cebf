"""``compress_adapters``: the GPU flow. One run loads a base model at most once and works through a
bounded batch of adapters that share it; each adapter is one Prefect task run (``process_adapter``, named after
the adapter): fetched, compressed (or calibrated on the batch's loaded base: attached, swept, detached), stored,
registered and published. One bad adapter fails alone, recorded with its reason; the base is freed when the
batch ends. ``compress_batch`` is the batch's body, also run inline by the catalog flow (embedded default).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from compeft.config import CalibrationConfig
from compeft.errors import InputError
from flows import quiet, tasks, ui
from flows.calibration import BaseSessions, resolve_base
from flows.params import (
    DEFAULT_OPTIONS,
    DEFAULT_SERVICE,
    CompressionOptions,
    ServiceParameters,
)
from flows.secrets import load_secrets
from storage import catalog
from storage.catalog import AdapterOutcome, ExistingWork
from storage.config import ServiceConfig
from storage.fullmodels import FULL, NO_BASE, resolve_full_base
from storage.values import AdapterRef

GPU_TAGS = ["compeft", "gpu"]
quiet.install()


class BaseDirs:
    """Full fine-tunes' base model directories, each fetched once per batch (an object, so that the task runs of
    one batch share it)."""

    def __init__(self) -> None:
        self.dirs: dict[str, Path] = {}

    def get(self, base: str) -> Path:
        if base not in self.dirs:
            self.dirs[base] = tasks.fetch_base(base)
        return self.dirs[base]


def publish_existing(ref: AdapterRef, existing: ExistingWork, config, service: ServiceConfig, work: Path) -> str | None:
    """Publish an already-registered artifact where it is not yet recorded as published; its URI there."""
    if not service.publish_to:
        return None
    if service.publish_to in existing.publications:
        return existing.publications[service.publish_to]
    local = tasks.fetch_stored_artifact(service, existing.artifact.sha256, work / "stored")
    publication = tasks.publish_artifact(local, service, ref, config, existing.artifact.sha256)
    tasks.register_publication(service, existing.artifact, publication)
    return publication.uri


def from_existing(ref: AdapterRef, existing: ExistingWork, config, service: ServiceConfig, work: Path) -> AdapterOutcome:
    return catalog.outcome(ref, "existing", existing.artifact, calibration=existing.calibration,
                           published_uri=publish_existing(ref, existing, config, service, work))


@task(name="compress-adapter", task_run_name="{ref.name}", cache_policy=NO_CACHE)
def process_adapter(ref: AdapterRef, options: CompressionOptions, service: ServiceConfig, force: bool, work: Path,
                    sessions: BaseSessions | None = None, bases: BaseDirs | None = None) -> AdapterOutcome:
    """fetch → compress or calibrate → store → register → publish, for one adapter (calibrated on the
    base that ``sessions`` keeps loaded for the batch; a full fine-tune against its base, fetched once per batch
    into ``bases``)."""
    bases = BaseDirs() if bases is None else bases
    config = options.config_for(ref.name)
    calibrating = isinstance(config, CalibrationConfig)
    existing = None if force else tasks.known_work(service, ref, config.key())
    if existing is not None and existing.usable(calibrating):
        return from_existing(ref, existing, config, service, work)
    adapter_dir = tasks.fetch_adapter(ref, work / "adapter", service)
    adapter = tasks.register_adapter(service, adapter_dir, ref, options.base)
    existing = None if force else tasks.find_existing(service, adapter.content_sha256, config.key())
    if existing is not None and existing.usable(calibrating):
        return from_existing(ref, existing, config, service, work)
    out_dir = work / "artifact"
    calibration = None
    if ref.peft_type == FULL:  # a full fine-tune: its residual against the base it names (issue 17)
        if calibrating:
            raise InputError(f"{ref.name}: calibrating a full fine-tune is not supported; compress it at a fixed (k, α)")
        base = resolve_full_base(ref.name, ref.base_model, options.base_for, ref.uri)
        if base is None:
            raise InputError(f"{ref.name}: {NO_BASE}")
        try:
            base_dir = bases.get(base)
        except InputError as err:
            return catalog.outcome(ref, "skipped", reason=f"its base cannot be had: {one_line(err)}")
        info = tasks.compress_adapter(adapter_dir, out_dir, config, base=base_dir)
    elif calibrating:
        base = resolve_base(ref, config.base)
        if base is None:
            raise InputError(f"{ref.name}: no base model to calibrate against (adapter records none; pass base)")
        session = sessions.get(base) if sessions is not None else None
        with quiet.forwarded("compeft.calibrate", _flow_logger(), f"{ref.name}: calibrating: "):
            result = tasks.calibrate_adapter(adapter_dir, out_dir, config.replace(base=base), session)
        info = result.artifact
    else:
        info = tasks.compress_adapter(adapter_dir, out_dir, config)
    stored = tasks.store_artifact(out_dir, service)
    artifact = tasks.register_artifact(service, adapter, info, stored, config)
    tasks.mark_near_duplicate(service, artifact, out_dir)
    if calibrating:
        calibration = tasks.register_calibration(service, artifact, result)
        plot = out_dir / "calibration.png"
        ui.calibration_markdown(ref.name, calibration, plot if plot.is_file() else None)
    published = None
    if service.publish_to:
        publication = tasks.publish_artifact(out_dir, service, ref, config, stored.sha256)
        tasks.register_publication(service, artifact, publication)
        published = publication.uri
    return catalog.outcome(ref, "compressed", artifact, calibration=calibration, published_uri=published)


def _flow_logger():
    """The enclosing flow run's logger (per-task lines are off in `compeft catalog` unless --verbose)."""
    from prefect.context import FlowRunContext
    from prefect.logging.loggers import flow_run_logger

    ctx = FlowRunContext.get()
    return flow_run_logger(ctx.flow_run, ctx.flow) if ctx and ctx.flow_run else get_run_logger()


def one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def compress_batch(adapters: Sequence[AdapterRef], options: CompressionOptions, service: ServiceConfig, force: bool,
                   on_outcome: Callable[[AdapterOutcome], None] | None = None) -> list[AdapterOutcome]:
    """The adapters one after another, each a ``process_adapter`` task run, sharing one loaded base model; a
    failure is that adapter's outcome, with its one-line reason. ``on_outcome`` hears of each as it ends."""
    logger = get_run_logger()
    outcomes: list[AdapterOutcome] = []
    root = Path(tempfile.mkdtemp(prefix="compeft-batch-"))
    sessions = BaseSessions(options.device)  # the base model, loaded once on first calibration
    bases = BaseDirs()  # full fine-tunes' bases, fetched once per batch
    try:
        for index, ref in enumerate(adapters):
            work = root / str(index)
            try:
                outcome = process_adapter(ref, options, service, force, work, sessions, bases)
            except Exception as err:  # noqa: BLE001 - one bad adapter fails alone, with its reason
                reason = one_line(err).replace(str(work / "adapter"), ref.uri)  # name the adapter, not the work dir
                logger.error("%s: failed: %s", ref.name, reason)
                outcome = catalog.outcome(ref, "failed", reason=reason)
            else:
                ratio = outcome.artifact.ratio if outcome.artifact else None
                logger.info("%s: %s (ratio %s)", ref.name, outcome.status, f"{ratio:.1f}×" if ratio else "n/a")
            finally:
                shutil.rmtree(work, ignore_errors=True)
            outcomes.append(outcome)
            if on_outcome is not None:
                on_outcome(outcome)
    finally:
        sessions.close()
        shutil.rmtree(root, ignore_errors=True)
    return outcomes


def summary(outcomes: Sequence[AdapterOutcome]) -> str:
    """'3 compressed, 1 failed' (statuses with no adapter left out)."""
    return ", ".join(f"{v} {k}" for k, v in catalog.counts(list(outcomes)).items() if v) or "no adapters"


@flow(name="compress-adapters", log_prints=True, retries=0)
def compress_adapters(
    adapters: list[AdapterRef],
    options: CompressionOptions = DEFAULT_OPTIONS,
    service: ServiceParameters = DEFAULT_SERVICE,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Compress a batch of adapters that share one base model (a GPU work-pool flow run).

    Args:
        adapters: References to the adapters of this batch, as the crawl found them (no weights).
        options: How to compress: a fixed density and α, or α calibrated on a validation task.
        service: Registry database, artifact store and publish destination.
        force: Compress again even when the registry already holds this (content, options) pair.
    """
    logger = get_run_logger()
    if filled := load_secrets():
        logger.info("credentials from Prefect Secret blocks: %s", ", ".join(filled))
    config = service.config()
    config.check_publish_to(sorted({a.source_uri for a in adapters}))
    run_id = str(flow_run.get_id() or "local")
    tasks.start_run(config, run_id, {"adapters": [a.uri for a in adapters], "options": options.model_dump(),
                                     "force": force, "publish_to": config.publish_to})
    bar = ui.Progress("compressing")
    bar.set(total=len(adapters), force=True)

    def advance(outcome: AdapterOutcome) -> None:
        bar.set(f"compressing (last: {outcome.name}, {outcome.status})", done=bar.done + 1)

    outcomes = compress_batch(adapters, options, config, force, on_outcome=advance)
    done = summary(outcomes)
    ui.outcome_tables(outcomes, f"{len(adapters)} adapter(s): {done}")
    tasks.finish_run(config, run_id, outcomes)
    bar.finish(done)
    return [o.fields() for o in outcomes]
