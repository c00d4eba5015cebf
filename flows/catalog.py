"""``compress_catalog``: the CPU flow. Crawl a source, skip what the registry already holds, and fan the rest out
in batches grouped by base model: as subflows in this process (embedded default) or as flow runs of the GPU
deployment, at most ``max_in_flight`` at once.

The deployment fan-out is Prefect's own: ``dispatch_batches`` is a subflow whose thread-pool task runner is
sized to ``max_in_flight``; each ``run_batch`` task waits on ``run_deployment`` (with an idempotency key per
batch and attempt), and Prefect's task retries resubmit a batch whose flow run crashed (a lost worker, marked
Crashed by the automation of deployments/bootstrap.py).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Literal
from uuid import UUID

from prefect import flow, get_run_logger, tags, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import deployment, flow_run, task_run
from prefect.task_runners import ThreadPoolTaskRunner

from compeft.config import CalibrationConfig
from flows import tasks, ui
from flows.batch import GPU_TAGS, compress_adapters
from flows.calibration import resolve_base
from flows.params import (
    DEFAULT_OPTIONS,
    DEFAULT_SERVICE,
    CompressionOptions,
    ServiceParameters,
)
from flows.secrets import load_secrets
from storage import catalog, census
from storage.catalog import AdapterOutcome
from storage.config import ServiceConfig
from storage.values import AdapterRef

GPU_DEPLOYMENT = "compress-adapters/gpu"
POLL_SECONDS = 2  # how often a waiting run_batch asks for its flow run's state (Prefect's default is 5)


def group_batches(refs: list[AdapterRef], options: CompressionOptions, batch_size: int) -> list[list[AdapterRef]]:
    """Adapters grouped by the base model they need, each group cut into batches of at most batch_size."""
    groups: dict[str, list[AdapterRef]] = defaultdict(list)
    for ref in refs:
        config = options.config_for(ref.name)
        key = resolve_base(ref, config.base) if isinstance(config, CalibrationConfig) else ref.base_model
        groups[key or ""].append(ref)
    batches = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda r: r.uri)
        batches += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
    return batches


def plan(refs: list[AdapterRef], options: CompressionOptions, service: ServiceConfig,
         force: bool) -> tuple[list[AdapterOutcome], list[AdapterRef]]:
    """Split adapters into those already done (content known from the listing, artifact registered,
    published where asked) and those to dispatch."""
    done, todo = [], []
    for ref in refs:
        config = options.config_for(ref.name)
        existing = None if force else tasks.known_work(service, ref, config.key())
        if existing is not None and existing.done(isinstance(config, CalibrationConfig), service.publish_to):
            done.append(catalog.outcome(ref, "existing", existing.artifact, calibration=existing.calibration,
                                        published_uri=existing.publications.get(service.publish_to or "")))
        else:
            todo.append(ref)
    return done, todo


class LostWorker(Exception):
    """A batch's flow run crashed (its worker or host was lost); the batch is submitted again."""


def _crashed(_task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect's retry condition: retry a batch only when its flow run crashed (not when it failed)."""
    return isinstance(getattr(state, "data", None), LostWorker)


@task(cache_policy=NO_CACHE, retry_condition_fn=_crashed)
def run_batch(batch: list[AdapterRef], index: int, gpu_deployment: str, options: CompressionOptions,
              service: ServiceParameters, force: bool, parent: str) -> list[AdapterOutcome]:
    """One batch as a flow run of the GPU deployment, waited for; its per-adapter outcomes."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )
    from prefect.deployments import run_deployment

    attempt = task_run.run_count - 1
    child = run_deployment(gpu_deployment, parameters={"adapters": batch, "options": options, "service": service,
                                                       "force": force},
                           timeout=None, poll_interval=POLL_SECONDS, idempotency_key=f"{parent}-batch-{index}-try-{attempt}",
                           flow_run_name=f"batch-{index}-try-{attempt}", tags=GPU_TAGS)
    state = child.state
    if state is not None and state.is_crashed():
        raise LostWorker(f"batch {index}: flow run {child.id} crashed: {state.message or ''}".strip())
    if state is None or not state.is_completed():
        reason = f"flow run {child.id} ended {state.name if state else 'without a state'}: {(state and state.message) or ''}"
        return [catalog.outcome(ref, "failed", reason=reason.strip()) for ref in batch]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[child.id]), key=ArtifactFilterKey(any_=[ui.TABLE_KEY])))
    rows = {r["uri"]: r for r in ui.outcomes_from_table(found[0].data if found else None)}
    registry = service.config().registry()
    return [AdapterOutcome.from_fields(registry, rows[ref.uri]) if ref.uri in rows else
            catalog.outcome(ref, "failed", reason=f"flow run {child.id} reported nothing for this adapter")
            for ref in batch]


@flow(name="dispatch-batches")
def dispatch_batches(batches: list[list[AdapterRef]], gpu_deployment: str, options: CompressionOptions,
                     service: ServiceParameters, force: bool, lost_worker_retries: int, parent: str,
                     progress: UUID, done: int, total: int) -> list[AdapterOutcome]:
    """Every batch on the GPU deployment, as many at once as this flow's task runner has threads; the parent's
    ``progress`` artifact advances as batches finish."""
    logger = get_run_logger()
    submit = run_batch.with_options(retries=lost_worker_retries)
    futures = [submit.submit(b, i, gpu_deployment, options, service, force, parent) for i, b in enumerate(batches)]
    outcomes: list[AdapterOutcome] = []
    for future in as_completed(futures):
        outcomes += future.result()
        ui.set_progress(progress, done + len(outcomes), total)
        logger.info("progress: %d/%d adapters", done + len(outcomes), total)
    return outcomes


@flow(name="compress-catalog", log_prints=True)
def compress_catalog(
    source: str,
    options: CompressionOptions = DEFAULT_OPTIONS,
    service: ServiceParameters = DEFAULT_SERVICE,
    force: bool = False,
    batch_size: int = 8,
    max_in_flight: int = 4,
    dispatch: Literal["auto", "inline", "deployment"] = "auto",
    gpu_deployment: str = GPU_DEPLOYMENT,
    lost_worker_retries: int = 2,
) -> dict[str, Any]:
    """Compress every new adapter of a catalog and register, store and publish the artifacts.

    Args:
        source: Where the adapters live: a local directory tree, s3://BUCKET/PREFIX, or a Hub address
            (hf://AUTHOR, hf://AUTHOR/REPO@REV[/SUB/DIR], hf://?search=TEXT&author=A&filter=TAG&base_model=ID&limit=N).
        options: How to compress: a fixed density and α, or α calibrated on a validation task.
        service: Registry database, artifact store and publish destination.
        force: Compress again even when the registry already holds this (content, options) pair.
        batch_size: Adapters per GPU flow run (they share one base model load).
        max_in_flight: GPU flow runs submitted at once (deployment dispatch).
        dispatch: inline runs batches here one after another; deployment submits them to the GPU
            work pool; auto picks deployment when this run itself comes from a deployment.
        gpu_deployment: The per-batch deployment (FLOW/DEPLOYMENT) on the gpu work pool.
        lost_worker_retries: Times a crashed GPU flow run (lost worker) is submitted again.
    """
    logger = get_run_logger()
    if filled := load_secrets():
        logger.info("credentials from Prefect Secret blocks: %s", ", ".join(filled))
    config = service.config()
    run_id = str(flow_run.get_id() or "local")
    tasks.start_run(config, run_id, {"source": source, "options": options.model_dump(), "force": force,
                                     "batch_size": batch_size, "publish_to": config.publish_to})
    bar = ui.progress(f"crawling {source}")
    refs, skipped = tasks.crawl_source(source, config)
    logger.info("found %d adapter(s) in %s, skipped %d candidate(s)", len(refs), source, len(skipped))
    for s in skipped:
        logger.info("skipped %s: %s", s.uri, s.reason)
    outcomes = [AdapterOutcome(uri=s.uri, name=s.uri.rstrip("/").rsplit("/", 1)[-1], status="skipped", reason=s.reason)
                for s in skipped]
    done, todo = plan(refs, options, config, force)
    outcomes += done
    total, finished = len(refs), len(done)
    ui.set_progress(bar, finished, total)
    batches = group_batches(todo, options, max(1, batch_size))
    logger.info("%d already done; %d to compress in %d batch(es)", len(done), len(todo), len(batches))

    def advance(n: int) -> None:
        nonlocal finished
        finished += n
        ui.set_progress(bar, finished, total)
        logger.info("progress: %d/%d adapters", finished, total)

    mode = dispatch
    if mode == "auto":
        mode = "deployment" if deployment.get_id() else "inline"
    if mode == "deployment" and batches:
        runner = ThreadPoolTaskRunner(max_workers=max(1, max_in_flight))
        outcomes += dispatch_batches.with_options(task_runner=runner)(
            batches, gpu_deployment, options, service, force, lost_worker_retries, run_id, bar, finished, total)
    else:
        registry = config.registry()
        for batch in batches:
            with tags(*GPU_TAGS):
                result = [AdapterOutcome.from_fields(registry, o) for o in compress_adapters(batch, options, service, force)]
            outcomes += result
            advance(len(result))
    outcomes = catalog.with_duplicate_marks(config.registry(), outcomes)
    counts = catalog.counts(outcomes)
    ui.census_markdown(census.run_census(refs, skipped, outcomes, config.registry()), source)
    ui.outcome_table(outcomes, f"{source}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    tasks.finish_run(config, run_id, outcomes)
    logger.info("catalog %s: %s", source, ", ".join(f"{v} {k}" for k, v in counts.items()))
    return {"run_id": run_id, "counts": counts, "outcomes": [o.fields() for o in outcomes]}
