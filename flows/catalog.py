"""``compress_catalog``: the CPU flow. Crawl a source, register what it finds, skip what the registry
already holds, and fan the rest out in batches grouped by base model: as subflows in this process
(embedded default) or as flow runs of the GPU deployment (``run_deployment``), bounded in flight.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Literal

from prefect import flow, get_run_logger, tags
from prefect.runtime import deployment, flow_run

from flows import tasks, ui
from flows.batch import (
    GPU_TAGS,
    _from_existing,
    _usable,
    compress_adapters,
    counts_of,
    failures,
)
from flows.library import resolve_base
from flows.params import (
    DEFAULT_OPTIONS,
    DEFAULT_SERVICE,
    AdapterItem,
    AdapterOutcome,
    CompressionOptions,
    ServiceConfig,
)
from flows.secrets import load_secrets

GPU_DEPLOYMENT = "compress-adapters/gpu"
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED", "CANCELLING")


def group_batches(items: list[AdapterItem], options: CompressionOptions, batch_size: int) -> list[list[AdapterItem]]:
    """Adapters grouped by the base model they need, each group cut into batches of at most batch_size."""
    groups: dict[str, list[AdapterItem]] = defaultdict(list)
    for item in items:
        key = resolve_base(item, options) if options.task_for(item.name) else (item.base_model or "")
        groups[key or ""].append(item)
    batches = []
    for key in sorted(groups):
        members = sorted(groups[key], key=lambda i: i.uri)
        batches += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
    return batches


def plan(items: list[AdapterItem], options: CompressionOptions, service: ServiceConfig,
         force: bool) -> tuple[list[AdapterOutcome], list[AdapterItem]]:
    """Split adapters into those already done (content known from the listing, artifact registered,
    published where asked) and those to dispatch."""
    done, todo = [], []
    for item in items:
        known = None if force else tasks.known_content(service.database_url, item)
        state = tasks.find_existing(service.database_url, known, options.key_hash(item.name)) if known else None
        destinations = dict(state["destinations"]) if state else {}
        if _usable(state, options.task_for(item.name) is not None) and (
                not service.publish_to or service.publish_to in destinations):
            done.append(_from_existing(item, state, destinations.get(service.publish_to or "")))
        else:
            todo.append(item)
    return done, todo


def _lost(batch: list[AdapterItem], reason: str) -> list[AdapterOutcome]:
    return [AdapterOutcome(uri=i.uri, name=i.name, status="failed", reason=reason) for i in batch]


def _child_outcomes(client, flow_run_id, batch: list[AdapterItem]) -> list[AdapterOutcome]:
    """Per-adapter outcomes of a finished GPU flow run, read back from its table artifact."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    found = client.read_artifacts(artifact_filter=ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), key=ArtifactFilterKey(any_=[ui.TABLE_KEY])))
    rows = ui.outcomes_from_table(found[0].data) if found else []
    by_uri = {r["uri"]: r for r in rows}
    out = []
    for item in batch:
        row = by_uri.get(item.uri)
        if row is None:
            out.append(AdapterOutcome(uri=item.uri, name=item.name, status="failed",
                                      reason=f"flow run {flow_run_id} reported nothing for this adapter"))
            continue
        out.append(ui.outcome_from_row(row))
    return out


def run_on_deployment(batches: list[list[AdapterItem]], deployment: str, options: CompressionOptions,
                      service: ServiceConfig, force: bool, max_in_flight: int, lost_worker_retries: int,
                      poll_seconds: float, on_done) -> list[AdapterOutcome]:
    """Submit each batch as a flow run of the GPU deployment, at most max_in_flight at once; a run
    that crashed (lost worker) is submitted again up to lost_worker_retries times."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    logger = get_run_logger()
    parent = str(flow_run.get_id() or "local")
    pending = [(index, 0) for index in range(len(batches))]
    in_flight: dict[Any, tuple[int, int]] = {}
    outcomes: list[AdapterOutcome] = []
    with get_client(sync_client=True) as client:
        while pending or in_flight:
            while pending and len(in_flight) < max_in_flight:
                index, attempt = pending.pop(0)
                params = {"adapters": [b.model_dump() for b in batches[index]], "options": options.model_dump(),
                          "service": service.model_dump(), "force": force}
                child = run_deployment(deployment, parameters=params, timeout=0,
                                       idempotency_key=f"{parent}-batch-{index}-try-{attempt}",
                                       flow_run_name=f"batch-{index}-try-{attempt}", tags=GPU_TAGS)
                logger.info("batch %d (%d adapters) submitted as flow run %s", index, len(batches[index]), child.id)
                in_flight[child.id] = (index, attempt)
            time.sleep(poll_seconds)
            for child_id, (index, attempt) in list(in_flight.items()):
                state = client.read_flow_run(child_id).state
                if state is None or state.type.value not in FINAL:
                    continue
                del in_flight[child_id]
                kind = state.type.value
                if kind == "COMPLETED":
                    result = _child_outcomes(client, child_id, batches[index])
                elif kind == "CRASHED" and attempt < lost_worker_retries:
                    logger.warning("batch %d: flow run %s crashed (lost worker?); submitting again", index, child_id)
                    pending.append((index, attempt + 1))
                    continue
                else:
                    result = _lost(batches[index], f"flow run {child_id} ended {state.name}: {state.message or ''}".strip())
                outcomes += result
                on_done(len(result))
    return outcomes


@flow(name="compress-catalog", log_prints=True)
def compress_catalog(
    source: str,
    options: CompressionOptions = DEFAULT_OPTIONS,
    service: ServiceConfig = DEFAULT_SERVICE,
    force: bool = False,
    batch_size: int = 8,
    max_in_flight: int = 4,
    dispatch: Literal["auto", "inline", "deployment"] = "auto",
    gpu_deployment: str = GPU_DEPLOYMENT,
    lost_worker_retries: int = 2,
    poll_seconds: float = 2.0,
) -> dict[str, Any]:
    """Compress every new adapter of a catalog and register, store and publish the artifacts.

    Args:
        source: Where the adapters live: a local directory tree, s3://BUCKET/PREFIX, or a Hub address
            (hf://AUTHOR, hf://AUTHOR/REPO@REV, hf://?search=TEXT&author=A&filter=TAG&base_model=ID&limit=N).
        options: How to compress: a fixed density and α, or α calibrated on a validation task.
        service: Registry database, artifact store and publish destination.
        force: Compress again even when the registry already holds this (content, options) pair.
        batch_size: Adapters per GPU flow run (they share one base model load).
        max_in_flight: GPU flow runs submitted at once (deployment dispatch).
        dispatch: inline runs batches here one after another; deployment submits them to the GPU
            work pool; auto picks deployment when this run itself comes from a deployment.
        gpu_deployment: The per-batch deployment (FLOW/DEPLOYMENT) on the gpu work pool.
        lost_worker_retries: Times a crashed GPU flow run (lost worker) is submitted again.
        poll_seconds: How often submitted GPU flow runs are checked.
    """
    logger = get_run_logger()
    if filled := load_secrets():
        logger.info("credentials from Prefect Secret blocks: %s", ", ".join(filled))
    run_id = str(flow_run.get_id() or "local")
    params = {"source": source, "options": options.model_dump(), "force": force, "batch_size": batch_size,
              "publish_to": service.publish_to}
    tasks.start_run(service.database_url, run_id, params)
    bar = ui.progress(f"crawling {source}")
    items, skipped = tasks.crawl_source(source, service)
    logger.info("found %d adapter(s) in %s, skipped %d candidate(s)", len(items), source, len(skipped))
    for s in skipped:
        logger.info("skipped %s: %s", s["uri"], s["reason"])
    outcomes = [AdapterOutcome(uri=s["uri"], name=s["uri"].rstrip("/").rsplit("/", 1)[-1], status="skipped",
                               reason=s["reason"]) for s in skipped]
    done, todo = plan(items, options, service, force)
    outcomes += done
    total, finished = len(items), len(done)
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
        outcomes += run_on_deployment(batches, gpu_deployment, options, service, force, max(1, max_in_flight),
                                      lost_worker_retries, poll_seconds, advance)
    else:
        for batch in batches:
            with tags(*GPU_TAGS):
                result = [AdapterOutcome.from_mapping(o) for o in compress_adapters(batch, options, service, force)]
            outcomes += result
            advance(len(result))
    counts = counts_of(outcomes)
    ui.outcome_table(outcomes, f"{source}: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v))
    tasks.finish_run(service.database_url, run_id, "completed", counts, failures(outcomes))
    logger.info("catalog %s: %s", source, ", ".join(f"{v} {k}" for k, v in counts.items()))
    return {"run_id": run_id, "counts": counts, "outcomes": [o.model_dump() for o in outcomes]}
