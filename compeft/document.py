"""The container's document and record columns as values: what compress writes, and what readers check and show.

Record columns (format version 2; tensors ``records/<column>`` of the container), for n records in τ order:

    names       U8   [Σ bytes]  the records' names, UTF-8, concatenated
    name_ends   I64  [n]        end of each name in ``names`` (non-decreasing; the last is len(names))
    ndim        I64  [n]        rank of each record's shape
    dims        I64  [Σ ndim]   the shapes, concatenated
    dtype       U8   [n]        index into the document's ``record_dtypes`` (sorted dtype names)
    theta_init  F64  [n]        θ_init of each record

The document holds ``records`` = n. Offsets into τ are implicit: consecutive, in record order. Version
1 documents hold the same records as a JSON list (``tensors``); both are read.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from compeft.adapters import DTYPES_BY_NAME
from compeft.container import FORMAT_NAME, FORMAT_VERSION, RECORDS_PREFIX, Container
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
    """The document of a new container (``checksums`` are added by the writer; the records go in record_tensors)."""
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
        "records": len(records),
        "record_dtypes": record_dtypes(records),
        "carried": [{"name": n, "shape": list(s), "dtype": dt} for n, (s, dt) in sorted(carried.items())],
        "source": dict(source),
        "package_version": package_version,
    }


def record_dtypes(records: Sequence[DeltaRecord]) -> list[str]:
    """The dtype names the records use, sorted (the ``dtype`` column indexes this list)."""
    return sorted({r.dtype for r in records})


# column → (dtype, is per record)
RECORD_COLUMNS = {
    "names": (torch.uint8, False),
    "name_ends": (torch.int64, True),
    "ndim": (torch.int64, True),
    "dims": (torch.int64, False),
    "dtype": (torch.uint8, True),
    "theta_init": (torch.float64, True),
}


def record_tensors(records: Sequence[DeltaRecord]) -> dict[str, torch.Tensor]:
    """The record columns of a new container (offsets are implicit: records are consecutive in τ)."""
    names = [r.name.encode("utf-8") for r in records]
    index = {name: i for i, name in enumerate(record_dtypes(records))}
    return {
        "names": torch.frombuffer(bytearray(b"".join(names)), dtype=torch.uint8) if any(names) else torch.zeros(0, dtype=torch.uint8),
        "name_ends": torch.tensor(list(itertools.accumulate(map(len, names))), dtype=torch.int64),
        "ndim": torch.tensor([len(r.shape) for r in records], dtype=torch.int64),
        "dims": torch.tensor([s for r in records for s in r.shape], dtype=torch.int64),
        "dtype": torch.tensor([index[r.dtype] for r in records], dtype=torch.uint8),
        "theta_init": torch.tensor([r.theta_init for r in records], dtype=torch.float64),
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


def _record_column(container: Container, name: str) -> np.ndarray:
    dtype, per_record = RECORD_COLUMNS[name]
    t = container.records.get(name)
    if t is None or t.dtype != dtype or t.dim() != 1 or (per_record and t.numel() != container.doc["records"]):
        raise ContainerError(f"record column {RECORDS_PREFIX}{name} is missing or has the wrong dtype or length")
    return t.numpy()


def _columns_v2(container: Container) -> RecordColumns:
    """The record columns of a version-2 container, checked (types, lengths, ranges) without a loop in numpy."""
    doc = container.doc
    n = _number(doc, "records", int)
    dtypes = doc.get("record_dtypes")
    if not isinstance(dtypes, list) or not all(isinstance(x, str) and x in DTYPES_BY_NAME for x in dtypes) or len(set(dtypes)) != len(dtypes):
        raise ContainerError(f"document field 'record_dtypes' must list known dtype names once each, got {dtypes!r}")
    raw, ends, ndim, dims, code, theta = (_record_column(container, c) for c in RECORD_COLUMNS)
    if n and (ends[0] < 0 or (np.diff(ends) < 0).any() or ends[-1] != raw.size) or (not n and raw.size):
        raise ContainerError(f"record column {RECORDS_PREFIX}name_ends does not cut {RECORDS_PREFIX}names into {n} names")
    if (ndim < 0).any() or int(ndim.sum()) != dims.size or (dims < 0).any():
        raise ContainerError(f"record columns {RECORDS_PREFIX}ndim/dims do not hold {n} shapes")
    if (code >= len(dtypes)).any():
        raise ContainerError(f"record column {RECORDS_PREFIX}dtype indexes past 'record_dtypes'")
    if not np.isfinite(theta).all():
        raise ContainerError(f"record column {RECORDS_PREFIX}theta_init holds a non-finite value")
    data = raw.tobytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ContainerError(f"record column {RECORDS_PREFIX}names is not UTF-8") from err
    starts = [0, *ends[:-1].tolist()]
    if len(text) == len(data):  # ASCII: byte offsets are character offsets
        names = tuple(map(text.__getitem__, map(slice, starts, ends.tolist())))
    else:
        try:
            names = tuple(data[a:b].decode("utf-8") for a, b in zip(starts, ends.tolist()))
        except UnicodeDecodeError as err:
            raise ContainerError(f"record column {RECORDS_PREFIX}name_ends cuts a name inside a UTF-8 character") from err
    rank = int(ndim[0]) if n and (ndim == ndim[0]).all() else -1
    grid = dims.reshape(n, rank) if rank > 0 else None
    if grid is not None and np.prod(grid, axis=1, dtype=np.float64).sum() < 2**53:  # one rank, int64 exact
        shapes = tuple(map(tuple, grid.tolist()))
        sizes = grid.prod(axis=1)
        numels, offsets = tuple(sizes.tolist()), tuple((np.cumsum(sizes) - sizes).tolist())
    else:
        flat_dims = dims.tolist()
        cuts = list(itertools.accumulate(ndim.tolist(), initial=0))
        shapes = tuple(map(tuple, map(flat_dims.__getitem__, map(slice, cuts, cuts[1:]))))
        numels = tuple(map(math.prod, shapes))
        offsets = tuple(itertools.accumulate(numels, initial=0))[:-1]
    return RecordColumns(names, shapes, tuple(map(dtypes.__getitem__, code.tolist())), tuple(theta.tolist()), offsets, numels)


def record_count(container: Container) -> int:
    """How many delta records the container declares (unchecked)."""
    doc = container.doc
    return len(doc.get("tensors") or ()) if doc.get("format_version") == 1 else int(doc.get("records") or 0)


def record_kinds(container: Container) -> set:
    """The distinct (dtype name, θ_init) of the records, read before they are checked (None where unreadable):
    the fast load picks its fused decode from this while check_records runs beside the device."""
    if container.doc.get("format_version") == 1:
        raw = container.doc.get("tensors")
        if not isinstance(raw, list) or not raw:
            return set()
        pairs = [(r.get("dtype"), r.get("theta_init")) for r in raw if isinstance(r, dict)] if set(map(type, raw)) != {dict} else \
            zip(map(dict.get, raw, itertools.repeat("dtype")), map(dict.get, raw, itertools.repeat("theta_init")))
        try:
            kinds = set(pairs)
        except TypeError:  # an unhashable field: the checks name it later
            return {(None, None)}
        return {_kind(dtype, theta) for dtype, theta in kinds}
    code, theta, dtypes = container.records.get("dtype"), container.records.get("theta_init"), container.doc.get("record_dtypes")
    if code is None or theta is None or code.dtype != torch.uint8 or theta.dtype != torch.float64 or not isinstance(dtypes, list):
        return {(None, None)}
    c, t = code.numpy(), theta.numpy()
    if c.size and (c == c[0]).all() and (t == t[0]).all():  # every LoRA: one dtype, one θ_init
        pairs = {(int(c[0]), float(t[0]))}
    else:
        pairs = set(zip(c.tolist(), t.tolist()))
    return {_kind(dtypes[i] if i < len(dtypes) else None, x) for i, x in pairs}


def _kind(dtype, theta) -> tuple:
    """(dtype name, θ_init) as read, None for either where it is not a known dtype name / a finite number."""
    ok_theta = isinstance(theta, (int, float)) and not isinstance(theta, bool) and math.isfinite(theta)
    return (dtype if isinstance(dtype, str) and dtype in DTYPES_BY_NAME else None, float(theta) if ok_theta else None)


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
        if not isinstance(doc.get("carried"), list):
            raise ContainerError("document field 'carried' must be a list")
        if doc["format_version"] >= 2:
            cols = _columns_v2(container)  # offsets follow from the shapes; θ_init is checked there
            covered = cols.offsets[-1] + cols.numels[-1] if cols.names else 0
        elif not isinstance(doc.get("tensors"), list):
            raise ContainerError("document field 'tensors' must be a list")
        else:
            cols = _columns_fast(doc["tensors"]) or _columns_slow(doc["tensors"])
            if not all(map(math.isfinite, cols.theta_inits)):
                bad = next(n for n, t in zip(cols.names, cols.theta_inits) if not math.isfinite(t))
                raise ContainerError(f"tensor record {bad!r} has a non-finite theta_init")
            expected = tuple(itertools.accumulate(cols.numels, initial=0))
            if cols.offsets != expected[:-1]:
                i = next(i for i, (a, b) in enumerate(zip(cols.offsets, expected)) if a != b)
                raise ContainerError(f"tensor record {cols.names[i]!r} has offset {cols.offsets[i]}, expected {expected[i]}")
            covered = expected[-1]
        if covered != d:
            raise ContainerError(f"tensor records cover {covered} entries, d is {d}")
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
        tensors=record_count(container),
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
