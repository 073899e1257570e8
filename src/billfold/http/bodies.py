"""Request bodies, read strictly after authorization, and responses written in pydantic's core.

Every JSON body is read here, by `read_json`, inside the route and so after the route's
`authorize` dependency: a request without a key is answered 401, and an agent key 403,
whatever its body holds (decision 0022). What a body must be:

- `Content-Type: application/json` (a `charset` other than UTF-8 is refused): 415
  `unsupported_media_type` otherwise.
- UTF-8, without a byte order mark; one JSON value, no object key twice, no `NaN` or
  `Infinity`, at most `MAX_DEPTH` levels deep: 400 `malformed_json` otherwise.
- No string, and no object key, holding a NUL or a lone UTF-16 surrogate
  (`billfold.kit.text`): 422 `invalid_input` with a pointer to the string.

The hot routes (the check API, consume) pay for none of the slower checks unless a cheap
test on the raw bytes says one could find something: pydantic's parser does the rest.
"""

from __future__ import annotations

import enum
import functools
import re
import types
import typing
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from billfold.http.openapi import schema_of
from billfold.http.problems import json_pointer
from billfold.kit import strictjson
from billfold.kit.errors import BillfoldError, FieldError, InvalidInput
from billfold.kit.text import json_faults

M = TypeVar("M", bound=BaseModel)

JSON_MEDIA_TYPE = "application/json"
_PLAIN_JSON = (b"content-type", JSON_MEDIA_TYPE.encode())  # a raw ASGI header
MAX_DEPTH = strictjson.MAX_DEPTH


class MalformedJson(BillfoldError):
    status = 400
    code = "malformed_json"
    title = "The body is not valid JSON"

    def __init__(self, detail: str) -> None:
        message = f"the body is not valid JSON: {detail}"
        super().__init__(message, errors=[FieldError(message, pointer="#")])


class UnsupportedMediaType(BillfoldError):
    status = 415
    code = "unsupported_media_type"
    title = "Unsupported media type"


def require_json(request: Request) -> None:
    """Refuse a body that is not declared `application/json` (UTF-8)."""
    declared = request.headers.get("content-type")
    if declared == JSON_MEDIA_TYPE:  # what nearly every client sends
        return
    media_type, _, parameters = (declared or "").partition(";")
    if media_type.strip().lower() != JSON_MEDIA_TYPE:
        raise UnsupportedMediaType(
            f"send the body as `Content-Type: {JSON_MEDIA_TYPE}`"
            + (f", not {media_type.strip()!r}" if media_type.strip() else "")
        )
    require_utf8(parameters)


def require_utf8(parameters: str) -> None:
    """Refuse a `charset` other than UTF-8 among a Content-Type's `parameters` (415)."""
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise UnsupportedMediaType(f"JSON bodies must be UTF-8, not charset={value.strip()}")


def decode_json(raw: bytes) -> Any:
    """The JSON value of a body, read strictly (`billfold.kit.strictjson`, the one reader):
    `MalformedJson` (400) for anything that is not UTF-8 JSON without duplicate keys, NaN
    or Infinity, nested at most MAX_DEPTH deep; `InvalidInput` (422, a pointer each) for
    text no backend can store."""
    try:
        value = strictjson.loads(raw)
    except strictjson.NotStrictJson as error:
        raise MalformedJson(str(error)) from None
    faults = [FieldError(reason, pointer=json_pointer(path)) for path, reason in json_faults(value)]
    if faults:
        more = f" (and {len(faults) - 1} more)" if len(faults) > 1 else ""
        raise InvalidInput(f"{faults[0].pointer}: {faults[0].detail}{more}", errors=faults)
    return value


def _keys(value: Any) -> int:
    """How many object keys the validated body `value` was read from, never more: a
    model's `fields_set` (the keys its input held) and a dict's keys. A body model whose
    validators set fields or add keys of their own would break that; none does.
    On the hot path: no isinstance against pydantic's metaclass, no generator."""
    kind = type(value)
    if kind in _SCALARS:
        return 0
    if kind is dict:
        count = len(value)
        for item in value.values():
            if type(item) not in _SCALARS:
                count += _keys(item)
        return count
    if kind is list:
        return sum(_keys(item) for item in value)
    fields: set[str] | None = getattr(value, "__pydantic_fields_set__", None)
    if fields is None:
        return 0
    count = len(fields)
    for name in fields:
        item = getattr(value, name)
        if type(item) not in _SCALARS:
            count += _keys(item)
    return count


_SCALARS = frozenset({str, int, float, bool, type(None), Decimal, datetime})


@functools.cache
def _shape(model: type[BaseModel]) -> tuple[bool, bool]:
    """Whether every field of `model` holds a scalar (so the body's only keys are the
    fields'), and whether it holds no float (so a NaN or Infinity never validates)."""
    leaves: list[Any] = []

    def scalar(annotation: Any) -> bool:
        origin = typing.get_origin(annotation)
        arguments = typing.get_args(annotation)
        if origin is typing.Annotated:
            return scalar(arguments[0])
        if origin in (typing.Union, types.UnionType):
            return all([scalar(item) for item in arguments])
        leaves.append(annotation)
        return (
            annotation in _SCALARS
            or origin is typing.Literal
            or (isinstance(annotation, type) and issubclass(annotation, enum.Enum))
        )

    flat = all([scalar(field.annotation) for field in model.model_fields.values()])
    return flat, flat and float not in leaves


# What pydantic's parser lets through and `decode_json` refuses, besides duplicate keys.
_MAYBE_FAULT = re.compile(rb"NaN|Infinity|\\u0000")


def _suspect(raw: bytes, parsed: BaseModel) -> bool:
    """Whether `raw` could hold what pydantic's parser lets through and `decode_json`
    refuses: NaN, Infinity, an escaped NUL, or a key given twice. Every key is followed
    by a colon, so a body with no more colons than the model has keys repeats none.
    A model of scalars without floats (the check's) needs the least of it."""
    flat, floatless = _shape(type(parsed))
    if floatless:  # NaN and Infinity are floats: no field would take them
        if b"\\u0000" in raw:
            return True
    elif _MAYBE_FAULT.search(raw) is not None:
        return True
    keys = len(parsed.__pydantic_fields_set__) if flat else _keys(parsed)
    return raw.count(b":") > keys


async def read_json(request: Request, model: type[M]) -> M:
    """Read and validate the JSON body of a route, strictly (see the module's doc).

    Call it in the route, after `authorize` has run. Errors are problems: 415
    `unsupported_media_type`, 400 `malformed_json`, or 422 `invalid_input` with a pointer
    per field. Pair it with `json_body_schema` for OpenAPI.
    """
    raw = await body_of(request)
    if not raw:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    if _PLAIN_JSON not in request.scope["headers"]:  # what nearly every client sends
        require_json(request)
    try:
        parsed = model.model_validate_json(raw)
    except ValidationError as error:
        decode_json(raw)  # a fault of the JSON itself is told before its fields'
        raise RequestValidationError(
            [{**item, "loc": ("body", *item["loc"])} for item in error.errors()]
        ) from None
    if _suspect(raw, parsed):
        decode_json(raw)
    return parsed


async def read_optional_json(request: Request, model: type[M]) -> M | None:
    """`read_json` for a route whose body may be left out (None then)."""
    if not await body_of(request):
        return None
    return await read_json(request, model)


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


def json_body_schema(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    """The OpenAPI `requestBody` of a route that reads its body with `read_json`.

    The models it refers to are registered as components by `openapi.install`."""
    schema = schema_of(model)
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema}},
        }
    }


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """Serialise a response model once, in pydantic's core, for the hot routes.

    FastAPI would otherwise dump the model, validate the dump against the response model
    and encode it again. Routes that use this still declare `response_model` for OpenAPI.
    """
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")
