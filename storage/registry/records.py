"""Frozen values written to and read from the registry (inputs are *Record, rows carry ids)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from compeft.config import option
from compeft.errors import OptionError

MAX_PAGE = 500
MAX_ROW = (1 << 63) - 1  # BIGINT's range: larger offsets and ids are bad input, not database errors


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class _ToDict:
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field (timestamps as ISO 8601)."""
        return _jsonable(asdict(self))  # type: ignore[arg-type]


def from_mapping(cls, mapping: Mapping[str, Any]):
    """Build dataclass ``cls`` from a row mapping, ignoring extra columns; timestamps become UTC-aware."""
    values = {}
    for f in fields(cls):
        value = mapping.get(f.name)
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        if isinstance(value, list) and f.name in ("target_modules",):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


@dataclass(frozen=True)
class AdapterRecord(_ToDict):
    """What is known about a source adapter when it is registered."""

    uri: str
    repo: str
    content_sha256: str
    file_hashes: Mapping[str, str]
    revision: str | None = None
    peft_type: str | None = None
    base_model: str | None = None
    rank: int | None = None
    target_modules: tuple[str, ...] | None = None
    parameter_count: int | None = None
    bytes: int | None = None
    subfolder: str = ""  # the adapter's folder inside its repo ('' at the root)
    layout: str | None = None  # the compeft.adapters.Layout its files follow (None: registered before 0002)
    dtype: str | None = None  # its weights' dtypes, sorted and '+'-joined (F32, BF16+F32)


@dataclass(frozen=True, kw_only=True)
class AdapterRow(AdapterRecord):
    """A registered adapter: its record, id, source and time of registration."""

    id: int
    source_id: int | None
    created_at: datetime


@dataclass(frozen=True)
class SourceRow(_ToDict):
    id: int
    uri: str
    kind: str
    created_at: datetime


@dataclass(frozen=True)
class ArtifactRecord(_ToDict):
    """One compressed artifact; (source_sha256, options_hash) is its idempotency key."""

    source_sha256: str
    options_hash: str
    options: Mapping[str, Any]
    codec: str
    density: float
    alpha: float
    bytes: int
    sha256: str
    package_version: str
    sigma: float | None = None
    scale: float | None = None
    kept: int | None = None
    bits_per_param: float | None = None
    bytes_source: int | None = None
    ratio: float | None = None
    storage_uri: str | None = None


@dataclass(frozen=True, kw_only=True)
class ArtifactRow(ArtifactRecord):
    """A registered artifact: its record, id, adapter and time of registration."""

    id: int
    adapter_id: int
    created_at: datetime


@dataclass(frozen=True)
class CalibrationRecord(_ToDict):
    """A calibration sweep: scores per (density k, alpha) point, the chosen point, the original's score."""

    task: str
    metric: str
    scores: tuple[Mapping[str, float], ...]
    chosen_density: float
    chosen_alpha: float
    chosen_score: float | None = None
    original_score: float | None = None
    runtime_s: float | None = None


@dataclass(frozen=True, kw_only=True)
class CalibrationRow(CalibrationRecord):
    """A recorded calibration sweep: its record, id, artifact and time."""

    id: int
    artifact_id: int
    created_at: datetime


@dataclass(frozen=True)
class PublicationRow(_ToDict):
    id: int
    artifact_id: int
    destination: str
    uri: str
    remote_revision: str
    published_at: datetime


@dataclass(frozen=True)
class RunRow(_ToDict):
    id: int
    flow_run_id: str
    parameters: Mapping[str, Any]
    status: str
    counts: Mapping[str, int]
    errors: tuple[Any, ...] | list[Any]
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class ArtifactSummary(_ToDict):
    """An artifact with the adapter facts used for filtering (one line of ``registry list``)."""

    artifact: ArtifactRow
    adapter_uri: str
    base_model: str | None
    peft_type: str | None

    def to_dict(self) -> dict[str, Any]:
        data = self.artifact.to_dict()
        data.update(adapter_uri=self.adapter_uri, base_model=self.base_model, peft_type=self.peft_type)
        return data


@dataclass(frozen=True)
class ArtifactDetail(_ToDict):
    """An artifact with its adapter, calibrations and publications (``registry show``)."""

    artifact: ArtifactRow
    adapter: AdapterRow
    calibrations: tuple[CalibrationRow, ...] = field(default_factory=tuple)
    publications: tuple[PublicationRow, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        data = self.artifact.to_dict()
        data["adapter"] = self.adapter.to_dict()
        data["calibrations"] = [c.to_dict() for c in self.calibrations]
        data["publications"] = [p.to_dict() for p in self.publications]
        return data


def _text(value: str | None, name: str) -> str | None:
    if value is not None and (not isinstance(value, str) or "\x00" in value or len(value) > 1024):
        raise OptionError(f"{name} must be a string of at most 1024 characters without NUL", name)
    return value


@dataclass(frozen=True)
class ArtifactQuery:
    """Which artifacts to list (filters) and which page of them, checked at the edge (CLI and HTTP API alike)."""

    base_model: str | None = field(default=None, metadata=option("only artifacts of adapters for this base model"))
    peft_type: str | None = field(default=None, metadata=option("only this PEFT type (LORA, IA3, ...; any case)"))
    min_ratio: float | None = field(default=None, metadata=option("only artifacts with at least this compression ratio"))
    limit: int = field(default=50, metadata=option(f"at most this many rows (1..{MAX_PAGE})"))
    offset: int = field(default=0, metadata=option("skip this many rows"))

    def __post_init__(self) -> None:
        _text(self.base_model, "base_model")
        _text(self.peft_type, "peft_type")
        if self.min_ratio is not None and not (isinstance(self.min_ratio, (int, float)) and 0 <= self.min_ratio < float("inf")):
            raise OptionError(f"min_ratio {self.min_ratio!r} must be a finite number >= 0", "min_ratio")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or not 1 <= self.limit <= MAX_PAGE:
            raise OptionError(f"limit {self.limit!r} must be an integer in 1..{MAX_PAGE}", "limit")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or not 0 <= self.offset <= MAX_ROW:
            raise OptionError(f"offset {self.offset!r} must be an integer in 0..{MAX_ROW}", "offset")


# ------------------------------------------------------------------------------------ issue 14: signatures, lineage
@dataclass(frozen=True)
class SignatureRecord(_ToDict):
    """An artifact's search signature: record layout, base model ("" unknown), size, support and sketch bytes."""

    layout_sha256: str
    base_model: str
    d: int
    kept: int
    sketch_version: int
    sketch: bytes


@dataclass(frozen=True, kw_only=True)
class SignatureRow(SignatureRecord):
    """A stored signature, with the near-duplicate mark (the earlier artifact it repeats, and their cosine)."""

    artifact_id: int
    duplicate_of: int | None
    duplicate_cosine: float | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data.pop("sketch")
        return data


@dataclass(frozen=True)
class OperationInput(_ToDict):
    """One input of a merge or composition: the registry artifact (when it is one), its address, sha256, weight."""

    address: str
    sha256: str
    weight: float
    artifact_id: int | None = None


@dataclass(frozen=True)
class OperationRecord(_ToDict):
    """A merge or composition: method and options, the inputs (lineage), the output and its registered artifact."""

    kind: str
    method: str
    options: Mapping[str, Any]
    output_format: str
    output_uri: str
    output_sha256: str
    inputs: tuple[OperationInput, ...]
    result: Mapping[str, Any] = field(default_factory=dict)
    artifact_id: int | None = None
    flow_run_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class OperationRow(OperationRecord):
    id: int
    created_at: datetime


@dataclass(frozen=True)
class Neighbour(_ToDict):
    """One result of ``registry similar``: an artifact, its exact cosine with the query, and the sketch's estimate."""

    artifact_id: int
    cosine: float
    estimate: float
    adapter_uri: str | None = None
    storage_uri: str | None = None


@dataclass(frozen=True)
class SimilarQuery:
    """Which neighbours of an artifact to return (``registry similar``), checked at the edge."""

    top: int = field(default=10, metadata=option(f"at most this many neighbours (1..{MAX_PAGE})"))
    min_cosine: float | None = field(default=None, metadata=option("only neighbours with at least this cosine"))
    shortlist: int = field(default=50, metadata=option(
        "candidates re-ranked exactly from their bit planes, by the sketch's estimate (>= top)", advanced=True))

    def __post_init__(self) -> None:
        for name, low in (("top", 1), ("shortlist", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_PAGE * 20:
                raise OptionError(f"{name} {value!r} must be an integer in {low}..{MAX_PAGE * 20}", name)
        if self.top > MAX_PAGE:
            raise OptionError(f"top {self.top!r} must be an integer in 1..{MAX_PAGE}", "top")
        if self.min_cosine is not None and not (isinstance(self.min_cosine, (int, float)) and -1 <= self.min_cosine <= 1):
            raise OptionError(f"min_cosine {self.min_cosine!r} must be a number in [-1, 1]", "min_cosine")
