"""Request bodies read, and responses written, in pydantic's core: for the hot routes,
where FastAPI's own body handling and response validation cost more than the work."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from billfold.http.openapi import schema_of

M = TypeVar("M", bound=BaseModel)


async def read_json(request: Request, model: type[M]) -> M:
    """Parse and validate a JSON body in pydantic's core, for the hot routes.

    FastAPI's own body handling (content-type parsing, `json.loads`, then validation) costs
    several times more. Errors become the same problems as FastAPI's: `malformed_json`, or
    `invalid_input` with a pointer per field. Pair it with `json_body_schema` for OpenAPI.
    """
    raw = await body_of(request)
    if not raw:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise RequestValidationError(
            [{**item, "loc": ("body", *item["loc"])} for item in error.errors()]
        ) from None


async def body_of(request: Request) -> bytes:
    """The whole request body, like `request.body()` without its async generator.

    Starlette streams a body through an async generator, which asyncio registers and
    finalises per request; on the check path that cost more than the JSON parsing."""
    cached: bytes | None = getattr(request, "_body", None)
    if cached is not None:  # already read, e.g. to fingerprint an Idempotency-Key
        return cached
    chunks: list[bytes] = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._body = body  # where Starlette's own `request.body()` keeps it
    return body


def json_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI `requestBody` of a route that reads its body with `read_json`.

    The models it refers to are registered as components by `openapi.install`."""
    schema = schema_of(model)
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    }


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """Serialise a response model once, in pydantic's core, for the hot routes.

    FastAPI would otherwise dump the model, validate the dump against the response model
    and encode it again. Routes that use this still declare `response_model` for OpenAPI.
    """
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")
