"""Read-only HTTP API over the registry (FastAPI): /health, /artifacts (filters + paging), /artifacts/{id}."""

from __future__ import annotations

from typing import Any

from storage.api_models import ArtifactDetail, ArtifactPage, Health
from storage.errors import NotFoundError, RegistryError
from storage.registry import Registry

MAX_PAGE = 500


def create_app(registry: Registry):
    """Build the FastAPI app serving ``registry``; only GET routes exist."""
    from fastapi import FastAPI, HTTPException, Query
    from fastapi.responses import JSONResponse

    app = FastAPI(
        title="compeft registry",
        description="Read-only view of ComPEFT-compressed artifacts and their provenance.",
        version="1",
    )

    @app.exception_handler(RegistryError)
    async def registry_error(_request, err: RegistryError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(err)})

    @app.get("/health", response_model=Health)
    def health() -> dict[str, Any]:
        """200 when the database answers."""
        registry.list_artifacts(limit=1)
        return {"status": "ok"}

    @app.get("/artifacts", response_model=ArtifactPage)
    def list_artifacts(
        base_model: str | None = Query(None, description="exact base model id"),
        peft_type: str | None = Query(None, description="LORA, IA3, ... (case-insensitive)"),
        min_ratio: float | None = Query(None, ge=0, description="minimum compression ratio"),
        limit: int = Query(50, ge=1, le=MAX_PAGE),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        """Artifacts matching the filters, newest first."""
        items, total = registry.list_artifacts(
            base_model=base_model, peft_type=peft_type, min_ratio=min_ratio, limit=limit, offset=offset
        )
        return {"items": [i.to_dict() for i in items], "total": total, "limit": limit, "offset": offset}

    @app.get("/artifacts/{artifact_id}", response_model=ArtifactDetail, responses={404: {"description": "unknown id"}})
    def get_artifact(artifact_id: int) -> dict[str, Any]:
        """One artifact with its adapter, calibrations and publications."""
        try:
            return registry.get_artifact(artifact_id).to_dict()
        except NotFoundError as err:
            raise HTTPException(status_code=404, detail=str(err)) from err

    return app
