"""``merge_artifacts`` and ``compose_artifacts``: operations on compressed artifacts as Prefect flows (issue 14),
with on-demand deployments (deployments/prefect.yaml). Inputs are registry artifact ids, artifact addresses
(s3://, hf://) or artifact directories;
each result is recorded in the registry with its lineage (which artifacts, the method, the weights), and a merge
compressed again is stored, registered and signed like any artifact.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from compeft.errors import InputError
from flows.params import DEFAULT_SERVICE, ComposeOptions, MergeOptions, ServiceParameters
from flows.secrets import load_secrets
from storage import operations
from storage.config import ServiceConfig
from storage.registry import ArtifactRow, OperationRow

step = task(cache_policy=NO_CACHE)


@step
def resolve_inputs(service: ServiceConfig, inputs: list[str], work: Path) -> list[operations.ResolvedInput]:
    """Registry ids, artifact addresses and artifact directories made local (fetched artifacts hash-checked)."""
    return operations.resolve_inputs(service.registry(), service.artifact_store(), inputs, work,
                                     s3_endpoint=service.s3_endpoint, hf_endpoint=service.hf_endpoint)


@step
def merge(paths: list[Path], dst: Path, options: MergeOptions):
    """One call to ``compeft.ops.merge``; its MergeResult."""
    from compeft.ops import merge as run

    return run(paths, dst, options.config())


@step
def compose(paths: list[Path], dst: Path, options: ComposeOptions):
    """One call to ``compeft.ops.compose``; its ComposeResult."""
    from compeft.ops import compose as run

    return run(paths, dst, options.config())


@step
def store_and_register(service: ServiceConfig, out: Path, result, options: MergeOptions) -> ArtifactRow:
    """Store a compressed merge, register it as an artifact of its derived adapter, and sign it (near-duplicates
    marked as for any artifact)."""
    config = options.config()
    inputs = [(i.sha256, i.weight) for i in result.inputs]
    key = operations.operation_key("merge", config.key_fields(), inputs)
    stored = service.artifact_store().put(out)
    registry = service.registry()
    artifact = operations.register_derived_artifact(registry, stored, result.artifact, "merge", key, config.key_fields(),
                                                    config.key(), result.inputs)
    from compeft.ops.planes import open_planes

    planes = open_planes(out)
    if service.near_duplicate_cosine is None:
        operations.sign(registry, artifact, planes)
    else:
        operations.mark_near_duplicate(registry, service.artifact_store(), artifact, planes,
                                       service.near_duplicate_cosine, out.parent / "dup")
    return artifact


@step
def deliver(out: Path, dst: str | None, overwrite: bool) -> str:
    """Copy the output to its destination directory; its address."""
    return operations.copy_output(out, dst, overwrite)


@step
def record_operation(service: ServiceConfig, kind: str, method: str, options: dict, resolved, result, output_format: str,
                     output_uri: str, output: Path, artifact: ArtifactRow | None) -> OperationRow:
    """Record the operation and its inputs in the registry."""
    return operations.register_operation(
        service.registry(), kind=kind, method=method, options=options, inputs=resolved, lineage_inputs=result.inputs,
        output_format=output_format, output_uri=output_uri, output_sha256=operations.output_sha256(output),
        result=_summary(result), artifact=artifact, flow_run_id=str(flow_run.get_id() or "local"))


def _summary(result) -> dict[str, Any]:
    data = result.to_dict()
    data.pop("inputs", None)
    data.pop("evaluations", None)
    if isinstance(data.get("artifact"), dict):
        data["artifact"] = {k: data["artifact"][k] for k in ("kept", "density", "alpha", "bytes_artifact", "codec")}
    return data


@flow(name="merge-artifacts", log_prints=True)
def merge_artifacts(inputs: list[str], options: MergeOptions, out: str | None = None,
                    service: ServiceParameters = DEFAULT_SERVICE, overwrite: bool = False) -> dict[str, Any]:
    """Merge compressed artifacts of one layout (task arithmetic or TIES, in parameter space).

    Args:
        inputs: Registry artifact ids (12 or #12), artifact addresses (s3://BUCKET/PREFIX/DIR,
            hf://ORG/REPO@REV/SUB/DIR) or artifact directories, one record layout.
        options: Method, weights, λ and output form (PEFT adapter, or compressed again).
        out: Directory to write the result to (required for a PEFT adapter; a compressed merge is always put in
            the artifact store and registered, and copied here too when given).
        service: Registry database and artifact store.
        overwrite: Replace an existing ``out``.
    """
    logger = get_run_logger()
    load_secrets()
    config, merge_config = service.config(), options.config()
    if merge_config.to == "peft" and not out:
        raise InputError("out: a merge written as a PEFT adapter needs a destination directory")
    work = Path(tempfile.mkdtemp(prefix="compeft-merge-"))
    try:
        resolved = resolve_inputs(config, inputs, work / "inputs")
        result = merge([r.path for r in resolved], work / "out", options)
        artifact = store_and_register(config, work / "out", result, options) if merge_config.to == "compeft" else None
        uri = deliver(work / "out", out, overwrite) if out else artifact.storage_uri
        row = record_operation(config, "merge", merge_config.method, merge_config.to_json(), resolved, result,
                               merge_config.to, uri, work / "out", artifact)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("merge %d: %s", row.id, result.summary())
    return {"operation_id": row.id, "artifact_id": artifact.id if artifact else None, "output_uri": uri,
            "result": result.to_dict()}


@flow(name="compose-artifacts", log_prints=True)
def compose_artifacts(inputs: list[str], options: ComposeOptions, out: str,
                      service: ServiceParameters = DEFAULT_SERVICE, overwrite: bool = False) -> dict[str, Any]:
    """Compose an adapter for a task from compressed experts (LoraHub weights learned with nevergrad).

    Args:
        inputs: Expert artifacts: registry ids (12 or #12), artifact addresses (s3://BUCKET/PREFIX/DIR,
            hf://ORG/REPO@REV/SUB/DIR) or artifact directories, one record layout.
        options: Task, base model, shots, budget and the search's settings.
        out: Directory the composed PEFT adapter (and compose.json with the weights) is written to.
        service: Registry database and artifact store.
        overwrite: Replace an existing ``out``.
    """
    logger = get_run_logger()
    load_secrets()
    config, compose_config = service.config(), options.config()
    work = Path(tempfile.mkdtemp(prefix="compeft-compose-"))
    try:
        resolved = resolve_inputs(config, inputs, work / "inputs")
        result = compose([r.path for r in resolved], work / "out", options)
        uri = deliver(work / "out", out, overwrite)
        row = record_operation(config, "compose", "lorahub", compose_config.to_json(), resolved, result, "peft", uri,
                               work / "out", None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("compose %d: %s", row.id, result.summary())
    return {"operation_id": row.id, "output_uri": uri, "result": result.to_dict()}
