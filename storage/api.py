"""Read-only HTTP API over the registry (FastAPI): /health, /artifacts (filters + paging), /artifacts/{id},
/census; its OpenAPI pages /docs (Swagger UI) and /redoc load their scripts from this server (fastapi-offline
ships them), so they render on a machine without internet."""

from __future__ import annotations

from typing import Any

from compeft.errors import OptionError
from storage.api_models import ArtifactDetail, ArtifactPage, Census, Health
from storage.errors import NotFoundError, RegistryError
from storage.registry import ArtifactQuery, Registry
from storage.registry.records import MAX_PAGE, MAX_ROW


def create_app(registry: Registry):
    """Build the FastAPI app serving ``registry``; only GET routes exist."""
    from fastapi import Depends, HTTPException, Path, Query
    from fastapi.responses import JSONResponse
    from fastapi_offline import FastAPIOffline

    app = FastAPIOffline(
        title="compeft registry",
        description="Read-only view of ComPEFT-compressed artifacts and their provenance.",
        version="1",
    )

    @app.exception_handler(RegistryError)
    async def registry_error(_request, err: RegistryError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(err)})

    @app.exception_handler(OptionError)
    async def bad_query(_request, err: OptionError) -> JSONResponse:  # the query's own checks: bad input, not a 5xx
        return JSONResponse(status_code=422, content={"detail": str(err)})

    def artifact_query(
        base_model: str | None = Query(None, description="exact base model id"),
        peft_type: str | None = Query(None, description="LORA, IA3, ... (case-insensitive)"),
        min_ratio: float | None = Query(None, ge=0, description="minimum compression ratio"),
        limit: int = Query(50, ge=1, le=MAX_PAGE),
        offset: int = Query(0, ge=0, le=MAX_ROW),
    ) -> ArtifactQuery:
        return ArtifactQuery(base_model, peft_type, min_ratio, limit, offset)

    @app.get("/health", response_model=Health)
    def health() -> dict[str, Any]:
        """200 when the database answers."""
        registry.list_artifacts(limit=1)
        return {"status": "ok"}

    @app.get("/artifacts", response_model=ArtifactPage)
    def list_artifacts(query: ArtifactQuery = Depends(artifact_query)) -> dict[str, Any]:
        """Artifacts matching the filters, newest first."""
        items, total = registry.list_artifacts(query)
        return {"items": [i.to_dict() for i in items], "total": total, "limit": query.limit, "offset": query.offset}

    @app.get("/artifacts/{artifact_id}", response_model=ArtifactDetail, responses={404: {"description": "unknown id"}})
    def get_artifact(artifact_id: int = Path(ge=0, le=MAX_ROW)) -> dict[str, Any]:
        """One artifact with its adapter, calibrations and publications."""
        try:
            return registry.get_artifact(artifact_id).to_dict()
        except NotFoundError as err:
            raise HTTPException(status_code=404, detail=str(err)) from err

    @app.get("/census", response_model=Census)
    def census() -> dict[str, Any]:
        """What the registry records: adapters by family, layout, dtype and base model, bytes before and after,
        and the skip reasons of each source's latest completed run."""
        from storage.census import registry_census

        return registry_census(registry).to_dict()

    return app
