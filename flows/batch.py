"""``compress_adapters``: the GPU flow. One run loads a base model at most once and works through a
bounded batch of adapters that share it; each adapter is fetched, compressed (or calibrated on the
batch's loaded base: attached, swept, detached), stored, registered and published. One bad adapter
fails alone, recorded with its reason; the base is freed when the batch ends.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from flows import tasks, ui
from flows.calibration import BaseSessions
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

GPU_TAGS = ["compeft", "gpu"]


def _artifact_record(result: dict[str, Any], stored: dict[str, Any], key_options: dict[str, Any],
                     key_hash: str, content_sha256: str) -> dict[str, Any]:
    from compeft import __version__

    return {
        "source_sha256": content_sha256, "options_hash": key_hash, "options": key_options,
        "codec": result["codec"], "density": result["density"], "alpha": result["alpha"],
        "bytes": result["bytes_artifact"], "sha256": stored["sha256"], "package_version": __version__,
        "sigma": result.get("sigma"), "scale": result.get("scale"), "kept": result.get("kept"),
        "bits_per_param": result.get("bits_per_param"), "bytes_source": result.get("bytes_source"),
        "ratio": result.get("ratio"), "storage_uri": stored["uri"],
    }


def _from_existing(item: AdapterItem, state: dict[str, Any], published_uri: str | None) -> AdapterOutcome:
    art = state["artifact"]
    return AdapterOutcome(
        uri=item.uri, name=item.name, status="existing", artifact_id=art["id"], bytes_source=art["bytes_source"],
        bytes_artifact=art["bytes"], ratio=art["ratio"], bits_per_param=art["bits_per_param"],
        density=art["density"], alpha=art["alpha"], score_original=state["score_original"],
        score_compressed=state["score_compressed"], storage_uri=art["storage_uri"], published_uri=published_uri,
    )


def _usable(state: dict[str, Any] | None, calibrating: bool) -> bool:
    """An existing artifact counts as done unless its calibration record was lost (crash in between)."""
    return state is not None and (state["calibrated"] or not calibrating)


def _publish_existing(item: AdapterItem, state: dict[str, Any], key_options: dict[str, Any], config: ServiceConfig,
                      work: Path) -> str | None:
    """Publish an already-registered artifact where it is not yet recorded as published."""
    destinations = dict(state["destinations"])
    if not config.publish_to:
        return None
    if config.publish_to in destinations:
        return destinations[config.publish_to]
    art = state["artifact"]
    local = tasks.fetch_stored_artifact(config.store, config.s3_endpoint, art["sha256"], str(work / "stored"))
    pub = tasks.publish_artifact(local, config.publish_to, item, key_options, art["sha256"], config)
    tasks.register_publication(config.database_url, art["id"], pub)
    return pub["uri"]


def process_adapter(item: AdapterItem, options: CompressionOptions, config: ServiceConfig, force: bool,
                    work: Path, sessions: BaseSessions | None = None) -> AdapterOutcome:
    """fetch → compress or calibrate → store → register → publish, for one adapter (calibrated on the
    base that ``sessions`` keeps loaded for the batch)."""
    key_options = options.key_options(item.name)
    key_hash = options.key_hash(item.name)
    task_name = options.task_for(item.name)
    db = config.database_url
    known = None if force else tasks.known_content(db, item)
    if known:
        state = tasks.find_existing(db, known, key_hash)
        if _usable(state, task_name is not None):
            return _from_existing(item, state, _publish_existing(item, state, key_options, config, work))
    adapter_dir = tasks.fetch_adapter(item, str(work / "adapter"), config)
    adapter = tasks.register_adapter(db, adapter_dir, item)
    if not force:
        state = tasks.find_existing(db, adapter["content_sha256"], key_hash)
        if _usable(state, task_name is not None):
            return _from_existing(item, state, _publish_existing(item, state, key_options, config, work))
    out_dir = str(work / "artifact")
    calibration = None
    if task_name is None:
        result = tasks.compress_adapter_dir(adapter_dir, out_dir, options)
    else:
        base = resolve_base(item, options)
        if base is None:
            from compeft.errors import InputError

            raise InputError(f"{item.name}: no base model to calibrate against (adapter records none; pass base)")
        session = sessions.get(base) if sessions is not None else None
        result = tasks.calibrate_adapter_dir(adapter_dir, out_dir, base, task_name, options, session)
        calibration = result["calibration"]
    stored = tasks.store_artifact(out_dir, config.store, config.s3_endpoint)
    registered = tasks.register_artifact(
        db, adapter["adapter_id"], _artifact_record(result, stored, key_options, key_hash, adapter["content_sha256"]))
    art = registered["artifact"]
    if calibration is not None:
        tasks.register_calibration(db, art["id"], calibration)
        ui.calibration_markdown(item.name, calibration, result.get("plot"))
    published = None
    if config.publish_to:
        pub = tasks.publish_artifact(out_dir, config.publish_to, item, key_options, stored["sha256"], config)
        tasks.register_publication(db, art["id"], pub)
        published = pub["uri"]
    return AdapterOutcome(
        uri=item.uri, name=item.name, status="compressed", artifact_id=art["id"], bytes_source=art["bytes_source"],
        bytes_artifact=art["bytes"], ratio=art["ratio"], bits_per_param=art["bits_per_param"],
        density=art["density"], alpha=art["alpha"],
        score_original=calibration.get("original_score") if calibration else None,
        score_compressed=calibration.get("chosen_score") if calibration else None,
        storage_uri=art["storage_uri"], published_uri=published,
    )


def counts_of(outcomes: list[AdapterOutcome]) -> dict[str, int]:
    counts = {"compressed": 0, "existing": 0, "skipped": 0, "failed": 0}
    for o in outcomes:
        counts[o.status] += 1
    return counts


def failures(outcomes: list[AdapterOutcome]) -> list[dict[str, Any]]:
    return [{"uri": o.uri, "name": o.name, "status": o.status, "reason": o.reason}
            for o in outcomes if o.status in ("failed", "skipped")]


@flow(name="compress-adapters", log_prints=True, retries=0)
def compress_adapters(
    adapters: list[AdapterItem],
    options: CompressionOptions = DEFAULT_OPTIONS,
    service: ServiceConfig = DEFAULT_SERVICE,
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
    run_id = str(flow_run.get_id() or "local")
    params = {"adapters": [a.uri for a in adapters], "options": options.model_dump(), "force": force,
              "publish_to": service.publish_to}
    tasks.start_run(service.database_url, run_id, params)
    bar = ui.progress(f"compressing {len(adapters)} adapter(s)")
    outcomes: list[AdapterOutcome] = []
    root = Path(tempfile.mkdtemp(prefix="compeft-batch-"))
    sessions = BaseSessions(options.device)  # the base model, loaded once on first calibration
    try:
        for index, item in enumerate(adapters):
            work = root / str(index)
            try:
                outcome = process_adapter(item, options, service, force, work, sessions)
            except Exception as err:  # noqa: BLE001 - one bad adapter fails alone, with its reason
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                reason = reason.replace(str(work / "adapter"), item.uri)  # name the adapter, not the work dir
                logger.error("%s: failed: %s", item.name, reason)
                outcome = AdapterOutcome(uri=item.uri, name=item.name, status="failed", reason=reason)
            else:
                logger.info("%s: %s (ratio %s)", item.name, outcome.status,
                            f"{outcome.ratio:.1f}×" if outcome.ratio else "n/a")
            finally:
                shutil.rmtree(work, ignore_errors=True)
            outcomes.append(outcome)
            ui.set_progress(bar, index + 1, len(adapters))
    finally:
        sessions.close()
        shutil.rmtree(root, ignore_errors=True)
    ui.outcome_table(outcomes, f"{len(adapters)} adapter(s): " +
                     ", ".join(f"{v} {k}" for k, v in counts_of(outcomes).items() if v))
    tasks.finish_run(service.database_url, run_id, "completed", counts_of(outcomes), failures(outcomes))
    return [o.model_dump() for o in outcomes]
