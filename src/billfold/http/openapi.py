"""The OpenAPI document as the server answers: every error an RFC 9457 problem, every
schema it refers to registered, and each operation named by hand (decision 0026).

FastAPI documents a 422 `HTTPValidationError` on any route with parameters; Billfold sends
`application/problem+json` instead, for that and for every other refusal. `install` writes
the `Problem` schema into the document and gives each operation the problem responses that
apply to it: what any route can answer (500), what authentication can (401, 403), what a
body or a parameter can (400, 413, 415, 422), and what a route declares in its decorator's
`responses` (404, 409, 410, 429, ...), described there by its codes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter

PROBLEM = "Problem"
PROBLEM_MEDIA_TYPE = "application/problem+json"
REF = "#/components/schemas/{model}"
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": PROBLEM,
    "description": "An RFC 9457 problem. `code` is stable: branch on it, not on `title`.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "description": "a URI naming the code"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "description": "the stable code, e.g. `invalid_input`"},
        "instance": {"type": "string", "description": "the request's path"},
        "correlation_id": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "one entry per offending field or parameter",
            "items": {
                "type": "object",
                "required": ["detail"],
                "properties": {
                    "detail": {"type": "string"},
                    "pointer": {"type": "string", "description": "a JSON pointer, `#/amount`"},
                    "parameter": {"type": "string"},
                },
            },
        },
    },
    # Some problems carry more members (`results`, `hint`, `retry_after`, ...).
    "additionalProperties": True,
}

# What each status means wherever it is documented without a description of its own.
DESCRIPTIONS = {
    400: "`malformed_json`: the body is not JSON (or not UTF-8)",
    401: "`unauthenticated`: no API key, or not a live one",
    403: "`insufficient_scope` or `agent_forbidden`: the key may not do this",
    404: "not found (`customer_not_found`, `grant_not_found`, ...)",
    409: "conflict with the current state",
    410: "gone",
    413: "`payload_too_large`: the body is over the limit",
    415: "`unsupported_media_type`: send the content type this route documents",
    422: "`invalid_input`: the body or a parameter is not valid; `errors` points at each",
    429: "`rate_limited`: retry after the `Retry-After` header's seconds",
    500: "`internal_error`: logged under the correlation id",
}


def schema_of(kind: Any) -> dict[str, Any]:
    """The JSON schema of a model or type, its definitions referred to as components.

    The definitions stay under `$defs` here; `install` moves them to the document's
    components, so that every `$ref` resolves."""
    schema = TypeAdapter(kind).json_schema(ref_template=REF)
    if isinstance(kind, type) and issubclass(kind, BaseModel):  # a component of its own
        definitions = schema.pop("$defs", {})
        definitions[kind.__name__] = schema
        return {"$ref": REF.format(model=kind.__name__), "$defs": definitions}
    return schema


def install(app: FastAPI) -> None:
    """Wrap `app.openapi` so that the document it builds (once) is the one above."""
    generate = app.openapi
    routes = {
        (method.lower(), route.path): route
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        components = document.setdefault("components", {}).setdefault("schemas", {})
        for name in _FASTAPI_VALIDATION:
            components.pop(name, None)
        components[PROBLEM] = PROBLEM_SCHEMA
        for path, method, operation in _operations(document):
            body = operation.get("requestBody")
            if body is not None:
                for media in body.get("content", {}).values():
                    _hoist(media.get("schema", {}), components)
            _document_problems(operation, routes.get((method, path)))
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "responses" in operation:
                yield path, method, operation


def _hoist(schema: dict[str, Any], components: dict[str, Any]) -> None:
    """Move a body schema's `$defs` (made by `schema_of`) to the document's components."""
    for name, definition in schema.pop("$defs", {}).items():
        known = components.setdefault(name, definition)
        if known != definition:
            raise ValueError(f"two different schemas are both named {name!r}")
    for value in schema.values():  # a body of several media types or a list of models
        if isinstance(value, dict):
            _hoist(value, components)


def _document_problems(operation: dict[str, Any], route: APIRoute | None) -> None:
    responses: dict[str, Any] = operation["responses"]
    statuses = {500}
    if "security" in operation:
        statuses |= {401, 403}
    if operation.get("parameters"):
        statuses.add(422)
    if "requestBody" in operation:
        statuses |= {400, 413, 415, 422}
    statuses |= {int(status) for status in responses if int(status) >= 400}
    if route is not None:  # declared in the route's decorator
        statuses |= {int(status) for status in route.responses if int(status) >= 400}
    for status in sorted(statuses):
        response = responses.setdefault(str(status), {})
        if response.get("description") in (None, "", "Validation Error", "Additional Response"):
            response["description"] = DESCRIPTIONS.get(status, "a problem")
        response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": REF.format(model=PROBLEM)}}}
    operation["responses"] = dict(sorted(responses.items()))
