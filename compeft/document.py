"""The container's document and record columns as typed, checked values: what compress writes and readers check.

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
from dataclasses import dataclass

import numpy as np
import torch

from compeft.container import FORMAT_NAME, FORMAT_VERSION, RECORDS_PREFIX, Container
from compeft.dtypes import DTYPES_BY_NAME
from compeft.errors import ContainerError
from compeft.taskvector import DeltaRecord

KINDS = ("adapter", "full")
MAX_NDIM = 8
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _where(key: str) -> str:
    return f"document field {key!r}"


def _int(value, key: str) -> int:
    if type(value) is not int or value < 0:
        raise ContainerError(f"{_where(key)} must be a non-negative integer, got {value!r}")
    return value


def _float(value, key: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise ContainerError(f"{_where(key)} must be a finite float32 number, got {value!r}")
    return float(value)


def _str(value, key: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ContainerError(f"{_where(key)} must be a string, got {value!r}")
    return value


def _str_map(value, key: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ContainerError(f"{_where(key)} must map names to strings")
    return dict(value)


@dataclass(frozen=True)
class CarriedRecord:
    """A tensor carried bit for bit: its name, shape and dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def parse(cls, raw) -> CarriedRecord:
        if not isinstance(raw, dict) or set(raw) != {"name", "shape", "dtype"}:
            raise ContainerError(f"malformed carried record {raw!r}")
        name, shape, dtype = raw["name"], raw["shape"], raw["dtype"]
        if not isinstance(name, str) or not isinstance(dtype, str) or dtype not in DTYPES_BY_NAME \
                or not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(type(s) is int and s >= 0 for s in shape):
            raise ContainerError(f"malformed carried record {raw!r}")
        return cls(name, tuple(shape), dtype)


@dataclass(frozen=True)
class Document:
    """The container's document as typed values, every field checked for type and range (format versions 1
    and 2; the delta records are checked as columns, by ``check``). ``to_json`` is what writers store."""

    kind: str
    codec: str
    density: float
    alpha: float
    sigma: float
    scale: float
    threshold: float
    d: int
    kept: int
    carried: tuple[CarriedRecord, ...]
    source: Mapping
    package_version: str
    base_sha256: Mapping[str, str] | None = None  # full fine-tunes: base tensor name → sha256 of its bytes
    weight_map: Mapping[str, str] | None = None  # full fine-tunes of sharded models: tensor name → shard file
    format_version: int = FORMAT_VERSION

    @classmethod
    def parse(cls, doc: Mapping) -> Document:
        """The checked document of a container (ContainerError naming the first bad field)."""
        if doc.get("kind") not in KINDS:
            raise ContainerError(f"{_where('kind')} must be one of {KINDS}, got {doc.get('kind')!r}")
        density, alpha = _float(doc.get("density"), "density"), _float(doc.get("alpha"), "alpha")
        sigma, scale, threshold = (_float(doc.get(k), k) for k in ("sigma", "scale", "threshold"))
        d, kept = _int(doc.get("d"), "d"), _int(doc.get("kept"), "kept")
        if not 0 < density <= 1 or kept > d:
            raise ContainerError("document fields density/kept are out of range")
        if alpha <= 0 or sigma < 0 or threshold < 0:
            raise ContainerError("document fields alpha/sigma/threshold are out of range")
        if scale != float(np.float32(alpha * sigma)):
            raise ContainerError(f"{_where('scale')} {scale!r} is not float32(alpha·sigma)")
        if not isinstance(doc.get("carried"), list):
            raise ContainerError(f"{_where('carried')} must be a list")
        carried = tuple(map(CarriedRecord.parse, doc["carried"]))
        source = doc.get("source")
        if not isinstance(source, dict):
            raise ContainerError(f"{_where('source')} must be an object, got {source!r}")
        _str_map(source.get("files", {}), "source.files")
        for key in ("peft_type", "base_model"):
            _str(source.get(key), f"source.{key}", optional=True)
        if source.get("bytes") is not None:
            _int(source["bytes"], "source.bytes")
        base_sha256 = None
        if (base := doc.get("base")) is not None:
            if not isinstance(base, dict) or set(base) != {"tensor_sha256"}:
                raise ContainerError(f"{_where('base')} must hold tensor_sha256 only")
            base_sha256 = _str_map(base["tensor_sha256"], "base.tensor_sha256")
        weight_map = _str_map(doc["weight_map"], "weight_map") if doc.get("weight_map") is not None else None
        return cls(
            kind=doc["kind"], codec=_str(doc.get("codec"), "codec"), density=density, alpha=alpha, sigma=sigma,
            scale=scale, threshold=threshold, d=d, kept=kept, carried=carried, source=dict(source),
            package_version=_str(doc.get("package_version"), "package_version"), base_sha256=base_sha256,
            weight_map=weight_map, format_version=doc["format_version"],
        )

    def to_json(self, records: Sequence[DeltaRecord]) -> dict:
        """The document of a new container holding ``records`` (the writer adds ``checksums``)."""
        doc = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "codec": self.codec,
            "density": self.density,
            "alpha": self.alpha,
            "sigma": self.sigma,
            "scale": self.scale,
            "threshold": self.threshold,
            "d": self.d,
            "kept": self.kept,
            "records": len(records),
            "record_dtypes": record_dtypes(records),
            "carried": [{"name": c.name, "shape": list(c.shape), "dtype": c.dtype} for c in sorted(self.carried, key=lambda c: c.name)],
            "source": dict(self.source),
            "package_version": self.package_version,
        }
        if self.base_sha256 is not None:
            doc["base"] = {"tensor_sha256": dict(self.base_sha256)}
        if self.weight_map is not None:
            doc["weight_map"] = dict(self.weight_map)
        return doc


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
    n = _int(doc.get("records"), "records")
    dtypes = doc.get("record_dtypes")
    known = isinstance(dtypes, list) and all(isinstance(x, str) and x in DTYPES_BY_NAME for x in dtypes)
    if not known or len(set(dtypes)) != len(dtypes):
        raise ContainerError(f"document field 'record_dtypes' must list known dtype names once each, got {dtypes!r}")
    raw, ends, ndim, dims, code, theta = (_record_column(container, c) for c in RECORD_COLUMNS)
    if n and (ends[0] < 0 or (np.diff(ends) < 0).any() or ends[-1] != raw.size) or (not n and raw.size):
        raise ContainerError(f"record column {RECORDS_PREFIX}name_ends does not cut {RECORDS_PREFIX}names into {n} names")
    if (ndim < 0).any() or int(ndim.sum()) != dims.size or (dims < 0).any():
        raise ContainerError(f"record columns {RECORDS_PREFIX}ndim/dims do not hold {n} shapes")
    if (code >= len(dtypes)).any():
        raise ContainerError(f"record column {RECORDS_PREFIX}dtype indexes past 'record_dtypes'")
    if not np.isfinite(theta).all() or (theta.size and np.abs(theta).max() > FLOAT32_MAX):
        raise ContainerError(f"record column {RECORDS_PREFIX}theta_init holds a non-finite value or one beyond float32")
    if ndim.size and ndim.max() > MAX_NDIM:
        raise ContainerError(f"record column {RECORDS_PREFIX}ndim: a record has more than {MAX_NDIM} dimensions")
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
    the fast load picks its fused decode from this while ``check`` runs beside the device."""
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


def check(container: Container) -> tuple[Document, RecordColumns]:
    """The checked document and delta records of a container: every field, the records against d and each
    other, the carried records against the carried tensors (ContainerError naming the file)."""
    doc, path = container.doc, container.path
    try:
        document = Document.parse(doc)
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
        if covered != document.d:
            raise ContainerError(f"tensor records cover {covered} entries, d is {document.d}")
        if len(set(cols.names)) != len(cols.names):
            raise ContainerError("tensor records repeat a name")
        if doc["format_version"] < 2:  # version 2's columns are range-checked in _columns_v2
            if any(len(shape) > MAX_NDIM for shape in cols.shapes):
                raise ContainerError(f"a tensor record has more than {MAX_NDIM} dimensions")
            if any(abs(t) > FLOAT32_MAX for t in cols.theta_inits):
                raise ContainerError("a tensor record's theta_init is outside the float32 range")
        declared = {c.name: (c.shape, DTYPES_BY_NAME[c.dtype]) for c in document.carried}
        if len(declared) != len(document.carried):
            raise ContainerError("carried records repeat a name")
        if declared and not declared.keys().isdisjoint(cols.names):
            raise ContainerError("a carried record has the name of a delta record")
        actual = {n: (tuple(t.shape), t.dtype) for n, t in container.carried.items()}
        if declared != actual:
            raise ContainerError("carried records do not match the carried tensors in the file")
    except ContainerError as err:
        raise ContainerError(f"{path}: {err}") from err
    return document, cols
