"""The container's document and delta records as typed, checked values: what compress writes and readers check.

The document's keys are defined once (``DOCUMENT_FIELDS``, ``SOURCE_FIELDS``). The records, n of them in τ order
(the document holds ``records`` = n and ``record_dtypes``), are stored by format version:

* 3: one uint8 tensor ``records/table``, a few bytes a record (``compeft.record_table``);
* 2: six columns ``records/<column>`` (names U8 concatenated, name_ends I64, ndim I64, dims I64, dtype U8 into
  ``record_dtypes``, theta_init F64);
* 1: a JSON list ``tensors`` in the document.

Offsets into τ are implicit (consecutive, in record order) in versions 2 and 3. Every version is read.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from compeft.container import (
    FORMAT_NAME,
    FORMAT_VERSION,
    READABLE_VERSIONS,
    RECORDS_PREFIX,
    Container,
)
from compeft.dtypes import DTYPES_BY_NAME
from compeft.errors import ContainerError
from compeft.record_table import TABLE, decode_table, encode_table, table_kinds
from compeft.taskvector import DeltaRecord

KINDS = ("adapter", "full")
MAX_NDIM = 8
FLOAT32_MAX = float(np.finfo(np.float32).max)
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _where(key: str) -> str:
    return f"document field {key!r}"


def _short(value) -> str:
    """A value's repr cut to one short line (hostile documents hold huge values)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# One check per JSON type of the schema: (value, key) → the typed value, or a ContainerError naming the key.
def count(value, key: str) -> int:
    """A non-negative JSON integer (no float, no bool)."""
    if type(value) is not int or value < 0:
        raise ContainerError(f"{_where(key)} must be a non-negative integer, got {_short(value)}")
    return value


def number(value, key: str) -> float:
    """A finite JSON float within the float32 range (writers write floats: 1.0, never 1)."""
    if type(value) is not float or not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise ContainerError(f"{_where(key)} must be a finite float32 number written as a float, got {_short(value)}")
    return value


def string(value, key: str) -> str:
    if not isinstance(value, str):
        raise ContainerError(f"{_where(key)} must be a string, got {_short(value)}")
    return value


def string_or_null(value, key: str) -> str | None:
    return None if value is None else string(value, key)


def count_or_null(value, key: str) -> int | None:
    return None if value is None else count(value, key)


def string_map(value, key: str) -> dict[str, str]:
    """An object mapping names to strings."""
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ContainerError(f"{_where(key)} must map names to strings")
    return dict(value)


def sha256_map(value, key: str) -> dict[str, str]:
    """An object mapping names to lowercase hex sha256 digests."""
    mapping = string_map(value, key)
    bad = next((k for k, v in mapping.items() if not SHA256_HEX.fullmatch(v)), None)
    if bad is not None:
        raise ContainerError(f"{_where(key)}[{bad!r}] is not a lowercase hex sha256")
    return mapping


def one_of(*allowed):
    def check(value, key: str):
        if type(value) not in {type(a) for a in allowed} or value not in allowed:
            raise ContainerError(f"{_where(key)} must be one of {', '.join(map(repr, allowed))}, got {_short(value)}")
        return value

    return check


def array(value, key: str) -> list:
    if not isinstance(value, list):
        raise ContainerError(f"{_where(key)} must be a list")
    return value


def sha256_hex(value, key: str) -> str:
    """A lowercase hex sha256 digest."""
    if not isinstance(value, str) or not SHA256_HEX.fullmatch(value):
        raise ContainerError(f"{_where(key)} is not a lowercase hex sha256")
    return value


def list_of(item: Callable[[object, str], object]):
    """A JSON list whose items each pass ``item``."""
    def check(value, key: str) -> list:
        return [item(v, f"{key}[{i}]") for i, v in enumerate(array(value, key))]

    return check


def obj(fields: Mapping[str, Field]):
    """A nested object checked against its own field table."""
    def check(value, key: str) -> dict:
        if not isinstance(value, dict):
            raise ContainerError(f"{_where(key)} must be an object, got {_short(value)}")
        return check_fields(value, fields, None, key + ".")

    return check


@dataclass(frozen=True)
class Field:
    """One key of the document: its check, the format versions that hold it, and whether it may be absent."""

    check: Callable[[object, str], object]
    versions: tuple[int, ...] = READABLE_VERSIONS
    optional: bool = False


def check_fields(raw: Mapping, fields: Mapping[str, Field], version: int | None, prefix: str = "") -> dict:
    """Every key of ``raw`` checked against ``fields`` (for format ``version``): unknown keys, missing keys and
    values of the wrong type or range are ContainerErrors naming the key."""
    wanted = {k: f for k, f in fields.items() if version is None or version in f.versions}
    unknown = sorted(set(raw) - set(wanted))
    if unknown:
        where = f"format version {version}" if version is not None else f"document field {prefix[:-1]!r}"
        raise ContainerError(f"document field {prefix + unknown[0]!r} is not part of {where}")
    missing = [k for k, f in wanted.items() if k not in raw and not f.optional]
    if missing:
        raise ContainerError(f"{_where(prefix + missing[0])} is missing")
    return {k: f.check(raw[k], prefix + k) for k, f in wanted.items() if k in raw}


# A merged artifact's lineage (compeft.ops.merging.MergeResult.lineage): the method, λ and each input's weight.
MERGE_INPUT_FIELDS: Mapping[str, Field] = {
    "path": Field(string),
    "sha256": Field(sha256_hex),
    "weight": Field(number),
}
MERGE_FIELDS: Mapping[str, Field] = {
    "operation": Field(one_of("merge")),
    "method": Field(string),
    "lam": Field(number),
    "inputs": Field(list_of(obj(MERGE_INPUT_FIELDS))),
}

# The source adapter or model: its files' hashes and what the registry records about it; for a source that is not
# a peft directory its layout, weights file and that file's safetensors metadata; for a merge, its lineage. New
# keys go here.
SOURCE_FIELDS: Mapping[str, Field] = {
    "files": Field(sha256_map),
    "peft_type": Field(string_or_null, optional=True),
    "base_model": Field(string_or_null, optional=True),
    "bytes": Field(count_or_null, optional=True),
    "layout": Field(string, optional=True),
    "weights_file": Field(string, optional=True),
    "weights_metadata": Field(string_map, optional=True),
    "merge": Field(obj(MERGE_FIELDS), optional=True),
}

# The document of every format version, defined once (docs/format.md, "The document"). ``records`` and
# ``record_dtypes`` (versions 2, 3) and ``tensors`` (version 1) are checked with the records, by ``check``.
DOCUMENT_FIELDS: Mapping[str, Field] = {
    "format": Field(one_of(FORMAT_NAME)),
    "format_version": Field(one_of(*READABLE_VERSIONS)),
    "kind": Field(one_of(*KINDS)),
    "codec": Field(string),
    "density": Field(number),
    "alpha": Field(number),
    "sigma": Field(number),
    "scale": Field(number),
    "threshold": Field(number),
    "d": Field(count),
    "kept": Field(count),
    "carried": Field(array),
    "source": Field(obj(SOURCE_FIELDS)),
    "package_version": Field(string),
    "checksums": Field(sha256_map),
    "base": Field(obj({"tensor_sha256": Field(sha256_map)}), optional=True),
    "weight_map": Field(string_map, optional=True),
    "tensors": Field(array, versions=(1,)),
    "records": Field(count, versions=(2, 3)),
    "record_dtypes": Field(array, versions=(2, 3)),
}


@dataclass(frozen=True)
class CarriedRecord:
    """A tensor carried bit for bit: its name, shape and dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def parse(cls, raw) -> CarriedRecord:
        if not isinstance(raw, dict) or set(raw) != {"name", "shape", "dtype"}:
            raise ContainerError(f"malformed carried record {_short(raw)}")
        name, shape, dtype = raw["name"], raw["shape"], raw["dtype"]
        if not isinstance(name, str) or not isinstance(dtype, str) or dtype not in DTYPES_BY_NAME \
                or not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(type(s) is int and s >= 0 for s in shape):
            raise ContainerError(f"malformed carried record {_short(raw)}")
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
        """The checked document of a container (ContainerError naming the first bad field): every key against
        DOCUMENT_FIELDS for its format version, then the ranges and relations between fields."""
        version = one_of(*READABLE_VERSIONS)(doc.get("format_version"), "format_version")
        f = check_fields(doc, DOCUMENT_FIELDS, version)
        density, alpha, sigma, scale, threshold, d, kept = (
            f[k] for k in ("density", "alpha", "sigma", "scale", "threshold", "d", "kept"))
        if not 0 < density <= 1 or kept > d:
            raise ContainerError("document fields density/kept are out of range")
        if alpha <= 0 or sigma < 0 or threshold < 0:
            raise ContainerError("document fields alpha/sigma/threshold are out of range")
        if scale != float(np.float32(alpha * sigma)):
            raise ContainerError(f"{_where('scale')} {scale!r} is not float32(alpha·sigma)")
        if f["kind"] != "full" and ("base" in f or "weight_map" in f):
            raise ContainerError("document fields 'base' and 'weight_map' belong to full fine-tune residuals only")
        return cls(
            kind=f["kind"], codec=f["codec"], density=density, alpha=alpha, sigma=sigma, scale=scale,
            threshold=threshold, d=d, kept=kept, carried=tuple(map(CarriedRecord.parse, f["carried"])),
            source=f["source"], package_version=f["package_version"],
            base_sha256=f["base"]["tensor_sha256"] if "base" in f else None, weight_map=f.get("weight_map"),
            format_version=version,
        )

    def to_json(self, records: Sequence[DeltaRecord]) -> dict:
        """The document of a new container holding ``records`` (the writer adds ``checksums``)."""
        doc = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "codec": self.codec,
            "density": float(self.density),
            "alpha": float(self.alpha),
            "sigma": float(self.sigma),
            "scale": float(self.scale),
            "threshold": float(self.threshold),
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


def record_tensors(records: Sequence[DeltaRecord], version: int = FORMAT_VERSION) -> dict[str, torch.Tensor]:
    """The record tensors of a new container: version 3's table, or version 2's columns (offsets are implicit:
    records are consecutive in τ)."""
    if version >= 3:
        index = {name: i for i, name in enumerate(record_dtypes(records))}
        table = encode_table([r.name for r in records], [(index[r.dtype], float(r.theta_init), tuple(r.shape)) for r in records])
        return {TABLE: torch.frombuffer(bytearray(table), dtype=torch.uint8) if table else torch.zeros(0, dtype=torch.uint8)}
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
    n = count(doc.get("records"), "records")
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


def _columns_v3(container: Container) -> RecordColumns:
    """The records of a version-3 container from its record table, checked (canonical encoding, ranges)."""
    doc = container.doc
    n = count(doc.get("records"), "records")
    dtypes = doc.get("record_dtypes")
    if not isinstance(dtypes, list) or not all(isinstance(x, str) for x in dtypes) or dtypes != sorted(set(dtypes)) \
            or not set(dtypes) <= DTYPES_BY_NAME.keys():
        raise ContainerError(f"document field 'record_dtypes' must list known dtype names, sorted, once each, got {_short(dtypes)}")
    t = container.records.get(TABLE)
    if set(container.records) != {TABLE} or t is None or t.dtype != torch.uint8 or t.dim() != 1:
        raise ContainerError(f"the records must be one uint8 tensor {RECORDS_PREFIX}{TABLE}")
    return _table_columns(t.numpy().tobytes(), n, tuple(dtypes))


@functools.lru_cache(maxsize=64)
def _table_columns(table: bytes, n: int, dtypes: tuple[str, ...]) -> RecordColumns:
    """The checked columns of a record table (a pure function of its bytes, remembered: adapters of one layout
    share their table, so a catalog or a pair decodes it once)."""
    names, kinds, kind_of = decode_table(table, n, len(dtypes), MAX_NDIM)
    if {dtype for dtype, _, _ in kinds} != set(range(len(dtypes))):
        raise ContainerError("document field 'record_dtypes' lists a dtype no record uses")
    sizes = [math.prod(shape) for _, _, shape in kinds]
    uses = np.bincount(kind_of, minlength=len(kinds)).tolist()
    if sum(a * b for a, b in zip(uses, sizes)) < 1 << 62:  # int64 exact
        numels_np = np.asarray(sizes, dtype=np.int64)[kind_of]
        numels, offsets = tuple(numels_np.tolist()), tuple((np.cumsum(numels_np) - numels_np).tolist())
    else:
        numels = tuple(map(sizes.__getitem__, kind_of.tolist()))
        offsets = tuple(itertools.accumulate(numels, initial=0))[:-1]
    which = kind_of.tolist()
    shapes, kind_dtypes, thetas = zip(*((shape, dtypes[dtype], theta) for dtype, theta, shape in kinds)) if kinds else ((), (), ())
    return RecordColumns(tuple(names), tuple(map(shapes.__getitem__, which)), tuple(map(kind_dtypes.__getitem__, which)),
                         tuple(map(thetas.__getitem__, which)), offsets, numels)


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
    if container.doc.get("format_version") == 3:
        table, dtypes = container.records.get(TABLE), container.doc.get("record_dtypes")
        kinds = table_kinds(table.numpy().tobytes()) if table is not None and table.dtype == torch.uint8 else None
        if kinds is None or not isinstance(dtypes, list):
            return {(None, None)}
        return {_kind(dtypes[i] if i < len(dtypes) else None, theta) for i, theta in kinds}
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
        if doc["format_version"] >= 2:  # offsets follow from the shapes; θ_init is checked there
            cols = _columns_v3(container) if doc["format_version"] == 3 else _columns_v2(container)
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
