"""The service's rules for operations on compressed artifacts (issue 14), without Prefect: sign an artifact for
search, mark near-duplicates, find an artifact's neighbours, resolve operation inputs (registry ids, artifact
addresses or directories), and register merges and compositions with their lineage.

The signature (choice and why). Each artifact gets a 4 KB signed count sketch of its ternary pattern in the database
(``compeft.ops.sketch``) beside its layout key and base model; the exact bit planes stay in the artifact store. A
search reads the sketches of the artifacts of the same layout and base model (one query, no artifact downloaded),
estimates every cosine with one matrix-vector product (standard deviation ≈ 0.03), and re-ranks a shortlist
exactly from the planes of the shortlisted artifacts only. Planes in the database would be 2 bits per parameter
(40 MB for a LLaMA-7B-shape LoRA) — too large to scan 10,000 of; the sketch alone cannot promise the exact
numbers the command prints; together they give both, and the shortlist's recall is measured (docs/benchmarks.md).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compeft.config import canonical_json
from compeft.container import FILENAME
from compeft.errors import InputError
from compeft.ops.planes import TernaryPlanes, open_planes
from compeft.ops.similar import pair_similarity
from compeft.ops.sketch import Signature, estimate, sketch_of
from storage.errors import NotFoundError
from storage.registry import (
    AdapterRecord,
    ArtifactRow,
    Neighbour,
    OperationInput,
    OperationRecord,
    OperationRow,
    Registry,
    SignatureRecord,
    SignatureRow,
    SimilarQuery,
)

DEFAULT_NEAR_DUPLICATE = 0.95
SKETCH_MARGIN = 0.15  # ≈ 5 standard deviations of the sketch's estimate: candidates below threshold − margin are skipped
CONFIRM = 10  # near-duplicate candidates confirmed exactly, best estimate first
ID_PATTERN = re.compile(r"^#?(\d+)$")


@dataclass(frozen=True)
class DuplicateMark:
    """An artifact is a near-duplicate of an earlier one: their exact cosine."""

    artifact_id: int
    duplicate_of: int
    cosine: float


def base_model_of(registry: Registry, artifact: ArtifactRow) -> str:
    """The base model of the artifact's adapter, "" when unknown (the signature's grouping key)."""
    return registry.get_artifact(artifact.id).adapter.base_model or ""


def artifact_directory(store, artifact: ArtifactRow, work: Path) -> Path:
    """A local directory holding the stored artifact: its local store entry, else a hash-checked copy in ``work``."""
    if artifact.storage_uri and "://" not in artifact.storage_uri:
        local = Path(artifact.storage_uri)
        if (local / FILENAME).is_file():
            return local
    dest = work / f"artifact-{artifact.id}"
    if (dest / FILENAME).is_file():
        return dest
    return store.get(artifact.sha256, dest)


def signature_record(signature: Signature, base_model: str) -> SignatureRecord:
    return SignatureRecord(layout_sha256=signature.layout, base_model=base_model, d=signature.d, kept=signature.kept,
                           sketch_version=signature.version, sketch=signature.to_bytes())


def sign(registry: Registry, artifact: ArtifactRow, planes: TernaryPlanes) -> SignatureRow:
    """Store the artifact's signature (kept if it exists)."""
    return registry.put_signature(artifact.id, signature_record(sketch_of(planes), base_model_of(registry, artifact)))


def _shortlist(query: SignatureRow, rows: Sequence[SignatureRow], n: int, floor: float | None = None
               ) -> list[tuple[SignatureRow, float]]:
    """The n candidates with the highest estimated cosine (at least ``floor``), best first."""
    rows = [r for r in rows if r.artifact_id != query.artifact_id and r.sketch_version == query.sketch_version
            and r.d == query.d]
    if not rows:
        return []
    sketches = np.stack([Signature.sketch_from_bytes(r.sketch) for r in rows])
    est = estimate(Signature.sketch_from_bytes(query.sketch), sketches)
    order = np.argsort(-est, kind="stable")[:n]
    return [(rows[i], float(est[i])) for i in order if floor is None or est[i] >= floor]


def mark_near_duplicate(registry: Registry, store, artifact: ArtifactRow, planes: TernaryPlanes, threshold: float,
                        work: Path) -> DuplicateMark | None:
    """Sign the artifact and mark it as a near-duplicate of the most similar earlier artifact of its layout and base
    model whose exact cosine is at least ``threshold`` (candidates from the sketch, confirmed from the planes)."""
    row = sign(registry, artifact, planes)
    if row.duplicate_of is not None:
        return DuplicateMark(artifact.id, row.duplicate_of, float(row.duplicate_cosine))
    earlier = [r for r in registry.signatures_like(row.layout_sha256, row.base_model) if r.artifact_id < artifact.id]
    best: DuplicateMark | None = None
    for candidate, _ in _shortlist(row, earlier, CONFIRM, threshold - SKETCH_MARGIN):
        other = registry.get_artifact(candidate.artifact_id).artifact
        cosine = pair_similarity(planes, open_planes(artifact_directory(store, other, work), planes.device)).cosine
        if cosine is not None and cosine >= threshold and (best is None or cosine > best.cosine):
            best = DuplicateMark(artifact.id, other.id, cosine)
    if best is not None:
        registry.mark_duplicate(artifact.id, best.duplicate_of, best.cosine)
    return best


def sign_stored(registry: Registry, store, artifact: ArtifactRow, work: Path, device: str = "cpu") -> SignatureRow:
    """The artifact's signature, made from its stored copy when it has none (artifacts older than signatures)."""
    row = registry.get_signature(artifact.id)
    if row is not None:
        return row
    return sign(registry, artifact, open_planes(artifact_directory(store, artifact, work), device))


def similar(registry: Registry, store, artifact_id: int, query: SimilarQuery, work: Path,
            device: str = "cpu") -> list[Neighbour]:
    """The artifacts most similar to ``artifact_id`` among those of its layout and base model: shortlisted by the
    sketch, ranked by the exact cosine from the bit planes."""
    target = registry.get_artifact(artifact_id).artifact
    row = sign_stored(registry, store, target, work, device)
    planes = open_planes(artifact_directory(store, target, work), device)
    neighbours = []
    for candidate, est in _shortlist(row, registry.signatures_like(row.layout_sha256, row.base_model),
                                     max(query.shortlist, query.top)):
        detail = registry.get_artifact(candidate.artifact_id)
        other = open_planes(artifact_directory(store, detail.artifact, work), device)
        cosine = pair_similarity(planes, other).cosine
        if cosine is not None and (query.min_cosine is None or cosine >= query.min_cosine):
            neighbours.append(Neighbour(candidate.artifact_id, cosine, est, detail.adapter.uri, detail.artifact.storage_uri))
    neighbours.sort(key=lambda n: (-n.cosine, n.artifact_id))
    return neighbours[: query.top]


# -- operations: inputs and lineage ---------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedInput:
    """An operation input made local: the artifact directory, and its registry row when it is one."""

    address: str
    path: Path
    artifact: ArtifactRow | None


def resolve_inputs(registry: Registry, store, specs: Sequence[str], work: Path, *, s3_endpoint: str | None = None,
                   hf_endpoint: str | None = None) -> list[ResolvedInput]:
    """Operation inputs given as registry ids (``12`` or ``#12``), artifact addresses (``s3://BUCKET/PREFIX/DIR``,
    ``hf://ORG/REPO[@REV][/SUB/DIR]``, ``registry:ID``, ``sha256:HEX``: what ``storage.serving.ArtifactResolver``
    resolves, fetched into ``work``) or artifact directories, made local; an input whose container is registered
    is linked to its row (by sha256)."""
    from compeft.hashing import sha256_file
    from storage.serving import ArtifactResolver, fetch_input

    resolver = ArtifactResolver(registry=registry, store=store, s3_endpoint=s3_endpoint, hf_endpoint=hf_endpoint)
    resolved = []
    for spec in specs:
        spec = str(spec).strip()
        if match := ID_PATTERN.match(spec):
            row = registry.get_artifact(int(match.group(1))).artifact
            resolved.append(ResolvedInput(spec, artifact_directory(store, row, work), row))
            continue
        path = fetch_input(resolver, spec, work)
        container = path / FILENAME if path.is_dir() else path
        if not container.is_file():
            raise InputError(f"input {spec!r}: not a registry id and no {FILENAME} there")
        rows = registry.find_artifacts_by_sha256(sha256_file(container))
        resolved.append(ResolvedInput(spec, container.parent, rows[0] if rows else None))
    return resolved


def operation_key(kind: str, key_fields: Mapping[str, Any], inputs: Sequence[tuple[str, float]]) -> str:
    """The content address of a derived adapter: the operation, its options and its inputs (sha256, weight)."""
    text = canonical_json({"kind": kind, "options": dict(key_fields), "inputs": [list(i) for i in inputs]})
    return hashlib.sha256(text.encode()).hexdigest()


def register_operation(registry: Registry, *, kind: str, method: str, options: Mapping[str, Any],
                       inputs: Sequence[ResolvedInput], lineage_inputs: Sequence, output_format: str, output_uri: str,
                       output_sha256: str, result: Mapping[str, Any], artifact: ArtifactRow | None = None,
                       flow_run_id: str | None = None) -> OperationRow:
    """Record a merge or composition: which artifacts (ids where registered), their weights, the output."""
    records = tuple(OperationInput(address=r.address, sha256=i.sha256, weight=i.weight,
                                   artifact_id=r.artifact.id if r.artifact else None)
                    for r, i in zip(inputs, lineage_inputs))
    return registry.add_operation(OperationRecord(
        kind=kind, method=method, options=dict(options), output_format=output_format, output_uri=output_uri,
        output_sha256=output_sha256, inputs=records, result=dict(result),
        artifact_id=artifact.id if artifact else None, flow_run_id=flow_run_id))


def register_derived_artifact(registry: Registry, stored, info, kind: str, key: str, key_fields: Mapping[str, Any],
                              options_key: str, lineage_inputs: Sequence) -> ArtifactRow:
    """Register a compressed merge as an artifact: its 'adapter' is the derived adapter (uri ``KIND:KEY``, content
    address KEY), so registry list/show/similar treat it like any other artifact."""
    from storage.catalog import register_artifact

    adapter = registry.get_or_create_adapter(AdapterRecord(
        uri=f"{kind}:{key}", repo=kind, content_sha256=key,
        file_hashes={f"input-{n}": i.sha256 for n, i in enumerate(lineage_inputs)}, peft_type=info.peft_type,
        base_model=info.base_model, parameter_count=info.d))
    return register_artifact(registry, adapter, info, stored, key_fields, options_key)


def output_sha256(path: Path) -> str:
    """The sha256 that names an operation's output: its container, else its adapter weights."""
    from compeft.adapters import ADAPTER_WEIGHTS
    from compeft.hashing import sha256_file

    for name in (FILENAME, ADAPTER_WEIGHTS):
        if (path / name).is_file():
            return sha256_file(path / name)
    raise NotFoundError(f"{path}: holds neither {FILENAME} nor {ADAPTER_WEIGHTS}")


def copy_output(src: Path, dst: str | None, overwrite: bool = False) -> str:
    """Move an operation's output directory to ``dst`` (atomically); its final address."""
    from compeft.atomic import atomic_directory

    if dst is None:
        return str(src)
    with atomic_directory(Path(dst), overwrite) as tmp:
        for item in src.iterdir():
            shutil.copyfile(item, tmp / item.name)
    return str(Path(dst))
