"""Routes: read the catalog, and apply a plans document (the API twin of `plans apply`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from billfold.catalog import service
from billfold.catalog.schemas import ApplyOut, CatalogOut, catalog_out
from billfold.http.calls import AdminCall, ReadCall

router = APIRouter(tags=["catalog"])


@router.get("/v1/catalog", operation_id="getCatalog")
async def get_catalog(call: ReadCall) -> CatalogOut:
    """The active meters and features, and the current version of every active plan."""
    return catalog_out(await call.catalog())


@router.post(
    "/v1/catalog",
    operation_id="applyCatalog",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/yaml": {"schema": {"type": "string"}},
            }
        }
    },
)
async def apply_catalog(
    request: Request,
    call: AdminCall,
    dry_run: Annotated[bool, Query(description="only show what would change")] = False,
) -> ApplyOut:
    """Apply a plans document (YAML or JSON). Stores new plan versions only for changes."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip()
    submitted = await service.submit(
        call.session, call.ctx, await request.body(), media_type, dry_run=dry_run
    )
    return ApplyOut(
        applied=submitted.applied, revision=submitted.revision, changes=submitted.changes
    )
