"""Registry database: schema, migrations and the :class:`Registry` repository."""

from storage.registry.records import (
    AdapterRecord,
    AdapterRow,
    ArtifactDetail,
    ArtifactQuery,
    ArtifactRecord,
    ArtifactRow,
    ArtifactSummary,
    CalibrationRecord,
    CalibrationRow,
    PublicationRow,
    RunRow,
    SourceRow,
)
from storage.registry.repository import Registry, open_registry

__all__ = [
    "AdapterRecord",
    "AdapterRow",
    "ArtifactDetail",
    "ArtifactQuery",
    "ArtifactRecord",
    "ArtifactRow",
    "ArtifactSummary",
    "CalibrationRecord",
    "CalibrationRow",
    "PublicationRow",
    "Registry",
    "RunRow",
    "SourceRow",
    "open_registry",
]
