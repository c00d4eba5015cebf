"""Response models of the read-only HTTP API (they shape the OpenAPI schema), generated from the registry's rows."""

from __future__ import annotations

from pydantic import BaseModel

from storage.census import Census as CensusValue
from storage.models import model_of
from storage.registry import AdapterRow, ArtifactRow, CalibrationRow, PublicationRow

Artifact = model_of(ArtifactRow, "Artifact", adapter_uri=(str | None, None), base_model=(str | None, None),
                    peft_type=(str | None, None))
Adapter = model_of(AdapterRow, "Adapter")
Calibration = model_of(CalibrationRow, "Calibration")
Publication = model_of(PublicationRow, "Publication")
Census = model_of(CensusValue, "Census", ratio=(float | None, None))


class ArtifactPage(BaseModel):
    """A page of artifacts (newest first) and the number matching the filters."""

    items: list[Artifact]  # type: ignore[valid-type]
    total: int
    limit: int
    offset: int


class ArtifactDetail(Artifact):  # type: ignore[valid-type, misc]
    """An artifact with its source adapter, calibrations and publications."""

    adapter: Adapter  # type: ignore[valid-type]
    calibrations: list[Calibration]  # type: ignore[valid-type]
    publications: list[Publication]  # type: ignore[valid-type]


class Health(BaseModel):
    status: str
