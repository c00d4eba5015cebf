"""Pydantic response models of the read-only HTTP API (they shape the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Artifact(_Model):
    """One compressed artifact with the adapter facts used for filtering."""

    id: int
    adapter_id: int
    adapter_uri: str | None = None
    base_model: str | None = None
    peft_type: str | None = None
    source_sha256: str
    options_hash: str
    options: dict[str, Any]
    codec: str
    density: float
    alpha: float
    sigma: float | None
    scale: float | None
    kept: int | None
    bits_per_param: float | None
    bytes: int
    bytes_source: int | None
    ratio: float | None
    storage_uri: str | None
    sha256: str
    package_version: str
    created_at: datetime


class ArtifactPage(_Model):
    """A page of artifacts (newest first) and the number matching the filters."""

    items: list[Artifact]
    total: int
    limit: int
    offset: int


class Adapter(_Model):
    id: int
    source_id: int | None
    uri: str
    repo: str
    revision: str | None
    content_sha256: str
    file_hashes: dict[str, str]
    peft_type: str | None
    base_model: str | None
    rank: int | None
    target_modules: list[str] | None
    parameter_count: int | None
    bytes: int | None
    created_at: datetime


class Calibration(_Model):
    id: int
    artifact_id: int
    task: str
    metric: str
    scores: list[dict[str, Any]]
    chosen_density: float
    chosen_alpha: float
    chosen_score: float | None
    original_score: float | None
    runtime_s: float | None
    created_at: datetime


class Publication(_Model):
    id: int
    artifact_id: int
    destination: str
    uri: str
    remote_revision: str
    published_at: datetime


class ArtifactDetail(Artifact):
    """An artifact with its source adapter, calibrations and publications."""

    adapter: Adapter
    calibrations: list[Calibration]
    publications: list[Publication]


class Health(_Model):
    status: str
