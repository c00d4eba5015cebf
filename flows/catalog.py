"""``compress_catalog``: the CPU flow. Crawl a source, plan away what the registry already holds (one bulk
lookup), and compress the rest in batches grouped by base model: inline in this run (embedded default; each
adapter one task run of this flow run) or as flow runs of the GPU deployment, at most ``max_in_flight`` at once.

The deployment fan-out is Prefect's own: ``dispatch_batches`` is a subflow whose thread-pool task runner is
sized to ``max_in_flight``; each ``run_batch`` task waits on ``run_deployment`` (with an idempotency key per
batch and attempt), and Prefect's task retries resubmit a batch whose flow run crashed (a lost worker, marked
Crashed by the automation of deployments/bootstrap.py).

The run's artifacts: a progress bar saying what the run does (ending "done: ..."), the outcome table in words,
the machine-readable outcome fields, and an index linking every batch run and calibration plot.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any, Literal
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.runtime import deployment, flow_run, task_run
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from compeft.config import CalibrationConfig
from flows import quiet, tasks, ui
from flows.batch import GPU_TAGS, compress_batch, summary
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
from storage.fullmodels import FULL, NO_BASE, resolve_full_base
from storage.models import form_field
from storage.values import AdapterRef

GPU_DEPLOYMENT = "compress-adapters/gpu"
POLL_SECONDS = 2  # how often a waiting run_batch asks for its flow run's state (Prefect's default is 5)
quiet.install()


def group_batches(refs: list[AdapterRef], options: CompressionOptions, batch_size: int | None) -> list[list[AdapterRef]]:
    """Adapters grouped by the base model they need, each group cut into batches of at most batch_size (None:
    one batch per base model)."""
    groups: dict[str, list[AdapterRef]] = defaultdict(list)
    for ref in refs:
        config = options.config_for(ref.name)
        key = resolve_base(ref, config.base if isinstance(config, CalibrationConfig) else None)
        if ref.peft_type == FULL:
            key = resolve_full_base(ref.name, ref.base_model, options.base_for, ref.uri)
        groups[key or ""].append(ref)
    batches = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda r: r.uri)
        size = batch_size or len(members)
        batches += [members[i:i + size] for i in range(0, len(members), size)]
    return batches


def plan(refs: list[AdapterRef], options: CompressionOptions, service: ServiceConfig,
         force: bool) -> tuple[list[AdapterOutcome], list[AdapterRef]]:
    """Split adapters into those already done (content known from the listing, artifact registered,
    published where asked) and those to dispatch; one task run and a few registry queries for the whole list."""
    configs = [options.config_for(ref.name) for ref in refs]
    known = [None] * len(refs) if force or not refs else tasks.plan_work(service, [(r, c.key()) for r, c in zip(refs, configs)])
    done, todo = [], []
    for ref, config, existing in zip(refs, configs, known):
        if ref.peft_type == FULL and resolve_full_base(ref.name, ref.base_model, options.base_for, ref.uri) is None:
            done.append(catalog.outcome(ref, "skipped", reason=NO_BASE))
            continue
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
              service: ServiceParameters, force: bool, parent: str) -> tuple[list[AdapterOutcome], ui.RunLink, list[ui.PlotLink]]:
    """One batch as a flow run of the GPU deployment, waited for; its per-adapter outcomes, a link to the run
    and to its calibration plots."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment

    attempt = task_run.run_count - 1
    child = run_deployment(gpu_deployment, parameters={"adapters": batch, "options": options, "service": service,
                                                       "force": force},
                           timeout=None, poll_interval=POLL_SECONDS, idempotency_key=f"{parent}-batch-{index}-try-{attempt}",
                           flow_run_name=f"batch-{index}-try-{attempt}", tags=GPU_TAGS)
    state = child.state
    if state is not None and state.is_crashed():
        raise LostWorker(f"batch {index}: flow run {child.id} crashed: {state.message or ''}".strip())
    link = ui.RunLink(child.name, len(batch), state.name if state else "unknown", child.id)
    if state is None or not state.is_completed():
        reason = f"flow run {child.id} ended {state.name if state else 'without a state'}: {(state and state.message) or ''}"
        return [catalog.outcome(ref, "failed", reason=reason.strip()) for ref in batch], link, []
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[child.id])))
    data = next((a.data for a in found if a.key == ui.DATA_KEY), None)
    plots = [ui.PlotLink(a.description.removeprefix("calibration of "), a.description, a.id) for a in found
             if (a.key or "").startswith(ui.CALIBRATION_KEY_PREFIX)]
    rows = {r["uri"]: r for r in ui.outcomes_from_table(data)}
    registry = service.config().registry()
    outcomes = [AdapterOutcome.from_fields(registry, rows[ref.uri]) if ref.uri in rows else
                catalog.outcome(ref, "failed", reason=f"flow run {child.id} reported nothing for this adapter")
                for ref in batch]
    return outcomes, link, plots


@flow(name="dispatch-batches")
def dispatch_batches(batches: list[list[AdapterRef]], gpu_deployment: str, options: CompressionOptions,
                     service: ServiceParameters, force: bool, lost_worker_retries: int, parent: str,
                     progress: UUID, done: int, total: int) -> tuple[list[AdapterOutcome], list[ui.RunLink], list[ui.PlotLink]]:
    """Every batch on the GPU deployment, as many at once as this flow's task runner has threads; the parent's
    ``progress`` artifact advances as batches finish."""
    from prefect.artifacts import update_progress_artifact

    logger = get_run_logger()
    submit = run_batch.with_options(retries=lost_worker_retries)
    futures = [submit.submit(b, i, gpu_deployment, options, service, force, parent) for i, b in enumerate(batches)]
    outcomes: list[AdapterOutcome] = []
    links: list[ui.RunLink] = []
    plots: list[ui.PlotLink] = []
    for future in as_completed(futures):
        batch_outcomes, link, batch_plots = future.result()
        outcomes += batch_outcomes
        links.append(link)
        plots += batch_plots
        finished = done + len(outcomes)
        update_progress_artifact(progress, 100.0 * finished / max(total, 1),
                                 description=f"compressing on the gpu work pool: {finished}/{total} adapters")
        logger.info("progress: %d/%d adapters (%s: %s)", finished, total, link.name, link.state)
    return outcomes, sorted(links, key=lambda r: r.name), plots


# Run-form fields (the UI's "Custom run"): labels in words, in the order a user decides; the dispatch knobs
# are set by the deployments (deployments/prefect.yaml) and the CLI, and kept out of the form.
Internal = SkipJsonSchema


@flow(name="compress-catalog", log_prints=True)
def compress_catalog(
    source: Annotated[str, form_field("Source", 0)],
    options: Annotated[CompressionOptions, form_field("Compression", 1)] = DEFAULT_OPTIONS,
    service: Annotated[ServiceParameters, form_field("Publish and store", 2)] = DEFAULT_SERVICE,
    force: Annotated[bool, form_field("Force", 3)] = False,
    batch_size: Annotated[int, form_field("Batch size", 4), Field(ge=1)] = 8,
    max_in_flight: Annotated[int, form_field("Batches at once", 5), Field(ge=1)] = 4,
    dispatch: Internal[Literal["auto", "inline", "deployment"]] = "auto",
    gpu_deployment: Internal[str] = GPU_DEPLOYMENT,
    lost_worker_retries: Internal[int] = 2,
) -> dict[str, Any]:
    """Compress every new adapter of a catalog and register, store and publish the artifacts.

    Args:
        source: Where the adapters live: a local directory tree, s3://BUCKET/PREFIX, or a Hub address
            (hf://AUTHOR, hf://AUTHOR/REPO@REV[/SUB/DIR], hf://?search=TEXT&author=A&filter=TAG&base_model=ID&limit=N).
        options: How to compress: a fixed density and α, or α calibrated on a validation task.
        service: Where artifacts are published (and, advanced, the registry database and artifact store).
        force: Compress again even when the registry already holds this (content, options) pair.
        batch_size: Adapters per GPU flow run (they share one base model load).
        max_in_flight: GPU flow runs submitted at once.
        dispatch: inline runs batches here one after another; deployment submits them to the GPU
            work pool; auto picks deployment when this run itself comes from a deployment.
        gpu_deployment: The per-batch deployment (FLOW/DEPLOYMENT) on the gpu work pool.
        lost_worker_retries: Times a crashed GPU flow run (lost worker) is submitted again.
    """
    logger = get_run_logger()
    if filled := load_secrets():
        logger.info("credentials from Prefect Secret blocks: %s", ", ".join(filled))
    config = service.config()
    config.check_publish_to([source])  # never publish at, inside or around the source or the store
    run_id = str(flow_run.get_id() or "local")
    tasks.start_run(config, run_id, {"source": source, "options": options.model_dump(), "force": force,
                                     "batch_size": batch_size, "publish_to": config.publish_to})
    bar = ui.Progress(f"crawling {source}")
    refs, skipped = tasks.crawl_source(source, config)
    logger.info("found %d adapter(s) in %s, skipped %d candidate(s)", len(refs), source, len(skipped))
    for s in skipped:
        logger.info("skipped %s: %s", s.uri, s.reason)
    outcomes = [AdapterOutcome(uri=s.uri, name=s.uri.rstrip("/").rsplit("/", 1)[-1], status="skipped", reason=s.reason)
                for s in skipped]
    bar.set(f"checking the registry for {len(refs)} adapter(s)", force=True)
    done, todo = plan(refs, options, config, force)
    outcomes += done
    total = len(refs)
    mode = dispatch
    if mode == "auto":
        mode = "deployment" if deployment.get_id() else "inline"
    # inline: one batch per base model (this process loads each base once); deployment: batch_size per GPU run
    batches = group_batches(todo, options, max(1, batch_size) if mode == "deployment" else None)
    logger.info("%d already done; %d to compress in %d batch(es)", len(done), len(todo), len(batches))
    links: list[ui.RunLink] = []
    plots: list[ui.PlotLink] = []
    if mode == "deployment" and batches:
        bar.set(f"compressing on the gpu work pool ({len(batches)} batch runs)", done=len(done), total=total, force=True)
        runner = ThreadPoolTaskRunner(max_workers=max(1, max_in_flight))
        dispatched, links, plots = dispatch_batches.with_options(task_runner=runner)(
            batches, gpu_deployment, options, service, force, lost_worker_retries, run_id, bar.id, len(done), total)
        outcomes += dispatched
    else:
        bar.set("compressing", done=len(done), total=total, force=True)
        every = max(1, total // 20)

        def advance(outcome: AdapterOutcome) -> None:
            bar.set(f"compressing (last: {outcome.name}, {outcome.status})", done=bar.done + 1)
            if bar.done % every == 0 or bar.done == total:
                logger.info("progress: %d/%d adapters", bar.done, total)

        for batch in batches:
            outcomes += compress_batch(batch, options, config, force, on_outcome=advance)
        plots = _local_plots()
    outcomes = catalog.with_duplicate_marks(config.registry(), outcomes)
    done_text = summary(outcomes)
    ui.census_markdown(census.run_census(refs, skipped, outcomes, config.registry()), source)
    ui.outcome_tables(outcomes, f"{source}: {done_text}")
    ui.run_index(links, plots)
    tasks.finish_run(config, run_id, outcomes)
    bar.finish(done_text)
    logger.info("catalog %s: %s", source, done_text)
    return {"run_id": run_id, "counts": catalog.counts(outcomes), "outcomes": [o.fields() for o in outcomes]}


def _local_plots() -> list[ui.PlotLink]:
    """The calibration plots this run made itself (inline batches)."""
    run = flow_run.get_id()
    if not run:
        return []
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run)]),
            key=ArtifactFilterKey(like_=ui.CALIBRATION_KEY_PREFIX + "%")))
    return [ui.PlotLink(a.description.removeprefix("calibration of "), a.description, a.id) for a in found]
