"""Routes: read the catalog, and apply a plans document (the API twin of `plans apply`)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from billfold.catalog import plansfile, service
from billfold.catalog.plansfile import PlansFileError
from billfold.catalog.schemas import ApplyOut, CatalogOut, catalog_out
from billfold.http.calls import AdminCall, ReadCall
from billfold.kit.errors import BillfoldError, FieldError

router = APIRouter(tags=["catalog"])
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


class InvalidPlans(BillfoldError):
    status = 422
    code = "invalid_plans"
    title = "The plans document is not valid"


@router.get("/v1/catalog")
async def get_catalog(call: ReadCall) -> CatalogOut:
    """The active meters and features, and the current version of every active plan."""
    return catalog_out(await call.catalog())


@router.post(
    "/v1/catalog",
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
    raw = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    try:
        if content_type in YAML_TYPES:
            spec = plansfile.parse(raw.decode("utf-8", errors="replace"))
        else:
            try:
                document: Any = json.loads(raw or b"null")
            except json.JSONDecodeError as error:
                raise PlansFileError(
                    [f"line {error.lineno}, column {error.colno}: {error.msg}"]
                ) from None
            spec = plansfile.validate(document)
        if dry_run:
            catalog, archived = await service.stored(call.session, call.ctx.tenant_id)
            changes = service.diff(catalog, archived, spec)
            return ApplyOut(
                applied=False,
                revision=call.principal.catalog_revision,
                changes=[line for c in changes.changes for line in c.lines()],
            )
        result, revision = await service.apply(call.session, call.ctx, spec)
    except PlansFileError as error:
        raise InvalidPlans(
            f"{len(error.errors)} problem(s) in the plans document",
            errors=[FieldError(message) for message in error.errors],
        ) from None
    return ApplyOut(
        applied=not result.empty,
        revision=revision,
        changes=[line for c in result.changes for line in c.lines()],
    )
