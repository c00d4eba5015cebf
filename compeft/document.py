"""The container's JSON document as values: what compress writes, and what readers check and show."""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from compeft.adapters import DTYPES_BY_NAME
from compeft.container import FORMAT_NAME, FORMAT_VERSION, Container
from compeft.errors import ContainerError
from compeft.stats import entropy_bits_per_param
from compeft.taskvector import DeltaRecord

KINDS = ("adapter", "full")


def build_document(
    *,
    kind: str,
    codec: str,
    density: float,
    alpha: float,
    sigma: float,
    scale: float,
    threshold: float,
    kept: int,
    records: Sequence[DeltaRecord],
    carried: Mapping[str, tuple[tuple[int, ...], str]],
    source: Mapping,
    package_version: str,
) -> dict:
    """The document of a new container (``checksums`` are added by the writer)."""
    d = records[-1].offset + records[-1].numel if records else 0
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "codec": codec,
        "density": density,
        "alpha": alpha,
        "sigma": sigma,
        "scale": scale,
        "threshold": threshold,
        "d": d,
        "kept": kept,
        "tensors": [r.to_dict() for r in records],
        "carried": [{"name": n, "shape": list(s), "dtype": dt} for n, (s, dt) in sorted(carried.items())],
        "source": dict(source),
        "package_version": package_version,
    }


def _number(doc: Mapping, key: str, kind: type = float) -> float | int:
    value = doc.get(key)
    if kind is int and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ContainerError(f"document field {key!r} must be a non-negative integer, got {value!r}")
    if kind is float and (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)):
        raise ContainerError(f"document field {key!r} must be a finite number, got {value!r}")
    return value


@dataclass(frozen=True)
class RecordColumns:
    """The checked delta records as columns (what the fast load needs, without 1000s of objects)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    theta_inits: tuple[float, ...]
    offsets: tuple[int, ...]
    numels: tuple[int, ...]

    @classmethod
    def of(cls, records: Sequence[DeltaRecord]) -> RecordColumns:
        return cls(*(tuple(getattr(r, f) for r in records) for f in ("name", "shape", "dtype", "theta_init", "offset", "numel")))

    def records(self) -> tuple[DeltaRecord, ...]:
        return tuple(map(DeltaRecord, self.names, self.shapes, self.dtypes, self.theta_inits, self.offsets))


_RECORD_KEYS = ("name", "shape", "dtype", "theta_init", "offset")


def _columns_fast(raw: list) -> RecordColumns | None:
    """The columns of well-formed records (JSON types exactly as written), or None for anything else."""
    try:
        names, shapes, dtypes, thetas, offsets = (tuple(map(operator.itemgetter(key), raw)) for key in _RECORD_KEYS)
        if not set(map(type, raw)) <= {dict} or not set(map(type, names)) <= {str} or not set(map(type, shapes)) <= {list}:
            return None
        dims = tuple(itertools.chain.from_iterable(shapes))
        if not set(map(type, dims)) <= {int} or not set(map(type, offsets)) <= {int} or not set(map(type, thetas)) <= {int, float}:
            return None
        if (dims and min(dims) < 0) or (offsets and min(offsets) < 0) or not set(dtypes) <= DTYPES_BY_NAME.keys():
            return None
        thetas = tuple(map(float, thetas))
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    return RecordColumns(names, tuple(map(tuple, shapes)), dtypes, thetas, offsets, tuple(map(math.prod, shapes)))


def _columns_slow(raw: list) -> RecordColumns:
    """DeltaRecord.from_dict on every record: its checks and its one-line errors."""
    return RecordColumns.of([DeltaRecord.from_dict(r) for r in raw])


def check_records(container: Container) -> RecordColumns:
    """check_document, returning the delta records as columns."""
    doc, path = container.doc, container.path
    try:
        if doc.get("kind") not in KINDS:
            raise ContainerError(f"document field 'kind' must be one of {KINDS}, got {doc.get('kind')!r}")
        for key in ("density", "alpha", "sigma", "scale", "threshold"):
            _number(doc, key)
        d, kept = _number(doc, "d", int), _number(doc, "kept", int)
        if not 0 < doc["density"] <= 1 or kept > d:
            raise ContainerError("document fields density/kept are out of range")
        if not isinstance(doc.get("tensors"), list) or not isinstance(doc.get("carried"), list):
            raise ContainerError("document fields 'tensors' and 'carried' must be lists")
        cols = _columns_fast(doc["tensors"]) or _columns_slow(doc["tensors"])
        if not all(map(math.isfinite, cols.theta_inits)):
            bad = next(n for n, t in zip(cols.names, cols.theta_inits) if not math.isfinite(t))
            raise ContainerError(f"tensor record {bad!r} has a non-finite theta_init")
        expected = tuple(itertools.accumulate(cols.numels, initial=0))
        if cols.offsets != expected[:-1]:
            i = next(i for i, (a, b) in enumerate(zip(cols.offsets, expected)) if a != b)
            raise ContainerError(f"tensor record {cols.names[i]!r} has offset {cols.offsets[i]}, expected {expected[i]}")
        if expected[-1] != d:
            raise ContainerError(f"tensor records cover {expected[-1]} entries, d is {d}")
        if len(set(cols.names)) != len(cols.names):
            raise ContainerError("tensor records repeat a name")
        declared = {}
        for c in doc["carried"]:
            if not isinstance(c, dict) or c.get("dtype") not in DTYPES_BY_NAME:
                raise ContainerError(f"malformed carried record {c!r}")
            declared[c.get("name")] = (tuple(c.get("shape", ())), DTYPES_BY_NAME[c["dtype"]])
        actual = {n: (tuple(t.shape), t.dtype) for n, t in container.carried.items()}
        if declared != actual:
            raise ContainerError("carried records do not match the carried tensors in the file")
    except ContainerError as err:
        raise ContainerError(f"{path}: {err}") from err
    return cols


def check_document(container: Container) -> tuple[DeltaRecord, ...]:
    """Check the document against itself and the file's tensors; returns the delta records."""
    return check_records(container).records()


@dataclass(frozen=True)
class ArtifactInfo:
    """What ``compeft inspect`` shows: the document's figures plus sizes derived from the file."""

    path: str
    format_version: int
    kind: str
    codec: str
    density: float
    alpha: float
    sigma: float
    scale: float
    threshold: float
    d: int
    kept: int
    tensors: int
    carried: int
    payload_bytes: int
    file_bytes: int
    bits_per_param: float
    entropy_bits_per_param: float
    peft_type: str | None
    base_model: str | None
    source_bytes: int | None
    ratio: float | None
    ratio_16bit: float
    sha256: str
    package_version: str
    source: dict

    def to_dict(self) -> dict:
        return asdict(self)


def artifact_info(container: Container, sha256: str) -> ArtifactInfo:
    """Figures of a checked container (sha256 is the file's hash)."""
    doc = container.doc
    d, payload = doc["d"], int(container.payload.numel())
    carried_bytes = sum(t.numel() * t.element_size() for t in container.carried.values())
    source = doc.get("source", {})
    source_bytes = source.get("bytes")
    return ArtifactInfo(
        path=str(Path(container.path).parent),
        format_version=doc["format_version"],
        kind=doc["kind"],
        codec=doc["codec"],
        density=doc["density"],
        alpha=doc["alpha"],
        sigma=doc["sigma"],
        scale=doc["scale"],
        threshold=doc["threshold"],
        d=d,
        kept=doc["kept"],
        tensors=len(doc["tensors"]),
        carried=len(doc["carried"]),
        payload_bytes=payload,
        file_bytes=container.file_bytes,
        bits_per_param=8 * payload / d if d else 0.0,
        entropy_bits_per_param=entropy_bits_per_param(doc["kept"] / d) if d else 0.0,
        peft_type=source.get("peft_type"),
        base_model=source.get("base_model"),
        source_bytes=source_bytes,
        ratio=source_bytes / container.file_bytes if source_bytes else None,
        ratio_16bit=(2 * d + carried_bytes) / container.file_bytes,
        sha256=sha256,
        package_version=doc["package_version"],
        source=dict(source),
    )
