"""Routes: read the catalog, and apply a plans document (the API twin of `plans apply`)."""

from __future__ import annotations

from typing import Annotated, NoReturn

import yaml
from fastapi import APIRouter, Query, Request

from billfold.catalog import service
from billfold.catalog.plansfile import YAML_TYPES
from billfold.catalog.schemas import ApplyOut, CatalogOut, catalog_out
from billfold.http.bodies import (
    JSON_MEDIA_TYPE,
    MAX_DEPTH,
    UnsupportedMediaType,
    body_of,
    decode_json,
)
from billfold.http.calls import AdminCall, ReadCall
from billfold.kit.errors import FieldError
from billfold.kit.text import text_fault

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
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await body_of(request)
    if media_type in YAML_TYPES:
        check_yaml(raw)
    elif media_type == JSON_MEDIA_TYPE:
        decode_json(raw)  # strict, as every JSON body: 400 or 422 before the plans' checks
    else:
        raise UnsupportedMediaType(f"send {JSON_MEDIA_TYPE} or {YAML_TYPES[0]}")
    submitted = await service.submit(call.session, call.ctx, raw, media_type, dry_run=dry_run)
    return ApplyOut(
        applied=submitted.applied, revision=submitted.revision, changes=submitted.changes
    )


def check_yaml(raw: bytes) -> None:
    """Refuse, as a problem with the plans document, a YAML document that is not UTF-8,
    nests deeper than JSON may, or holds text no backend can store. Its events are read
    one by one, without the recursion that building a deep document would need; syntax
    errors are left to the plans file's reader, which reports them with the rest."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        invalid(f"the document must be UTF-8 (byte {error.start} is not)")
    depth = 0
    try:
        for event in yaml.parse(text):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    invalid(f"{_where(event)}: nested more than {MAX_DEPTH} levels deep")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            elif isinstance(event, yaml.ScalarEvent):
                fault = text_fault(event.value)
                if fault is not None:
                    invalid(f"{_where(event)}: a string {fault}")
    except yaml.YAMLError:
        return


def _where(event: yaml.Event) -> str:
    mark = event.start_mark
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(document)"


def invalid(message: str) -> NoReturn:
    raise service.InvalidPlans("the plans document cannot be read", errors=[FieldError(message)])
