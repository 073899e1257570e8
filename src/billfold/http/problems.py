"""RFC 9457 problems: how every refusal and failure leaves the service.

Every error leaves as `application/problem+json` with a stable `code`, including the
framework's own 404, 405 and 422. A refusal is never a 500; an unexpected failure is a
500 that is logged with its correlation id and counted in `/metrics`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from billfold.http.metrics import Metrics
from billfold.kit.errors import BillfoldError, FieldError, PayloadTooLarge
from billfold.kit.idempotency import Replay
from billfold.kit.schemas import printable

log = logging.getLogger("billfold.http")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://billfold.dev/problems/"
CORRELATION_HEADER = "x-correlation-id"
# Where a read-only request leaves its unit of work for the guard to close (see calls).
UNIT_STATE_KEY = "billfold_unit"


async def answer_exception(request: Request, exc: Exception) -> Response:
    """Answer `exc` with the handler the app registered for its nearest class, as
    Starlette's exception middleware would. Call it inside the `except` block, so that
    the catch-all handler logs the traceback."""
    handlers = request.app.exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            response: Response = await handler(request, exc)
            return response
    raise exc


def correlation_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("correlation_id", "")) or uuid.uuid4().hex


def problem(
    request: Request | None,
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[FieldError] | None = None,
    extra: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if request is not None:
        body["instance"] = request.url.path
        body["correlation_id"] = correlation_id(request)
        metrics: Metrics | None = getattr(request.app.state, "metrics", None)
        if metrics is not None:
            metrics.problems.labels(code=code, status=str(status)).inc()
    if errors:
        body["errors"] = [error.as_dict() for error in errors]
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def problem_for(request: Request, exc: BillfoldError) -> JSONResponse:
    return problem(
        request,
        status=exc.status,
        code=exc.code,
        title=exc.title,
        detail=exc.detail,
        errors=exc.errors,
        extra=exc.extra,
        headers=exc.headers,
    )


def json_pointer(path: Sequence[Any]) -> str:
    """The JSON pointer (RFC 6901) of `path` into a body, as a problem's `errors` give
    it; what cannot be sent back as UTF-8 (a lone surrogate) is written as an escape."""
    escaped = (printable(str(part)).replace("~", "~0").replace("/", "~1") for part in path)
    return "#/" + "/".join(escaped) if path else "#"


def _pointer(location: tuple[Any, ...]) -> FieldError:
    kind, *rest = location or ("body",)
    if kind == "body":
        return FieldError("", pointer=json_pointer(rest))
    return FieldError("", parameter=str(rest[0]) if rest else str(kind))


def _validation_errors(exc: RequestValidationError) -> tuple[int, str, str, list[FieldError]]:
    errors: list[FieldError] = []
    for item in exc.errors():
        place = _pointer(tuple(item.get("loc", ())))
        kind = item.get("type", "")
        if kind == "json_invalid":
            message = (
                f"the body is not valid JSON: {item.get('ctx', {}).get('error', 'parse error')}"
            )
            return 400, "malformed_json", message, [FieldError(message, pointer="#")]
        message = {
            "extra_forbidden": "unknown field",
            "missing": "required",
        }.get(kind, str(item.get("msg", "invalid")))
        errors.append(FieldError(message, pointer=place.pointer, parameter=place.parameter))
    first = errors[0] if errors else FieldError("invalid")
    where = first.pointer or first.parameter or "request"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return 422, "invalid_input", f"{where}: {first.detail}{more}", errors


def install(app: FastAPI, metrics: Metrics) -> None:
    app.state.metrics = metrics

    @app.exception_handler(BillfoldError)
    async def _billfold(request: Request, exc: BillfoldError) -> JSONResponse:
        return problem_for(request, exc)

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _exc: ClientDisconnect) -> JSONResponse:
        # The client left before sending its whole body: nobody will read this answer,
        # and it is no failure of ours. Counted by code, not as an unhandled error.
        return problem(
            request,
            status=400,
            code="client_disconnected",
            title="The client disconnected",
            detail="the connection closed before the request body was complete",
        )

    @app.exception_handler(Replay)
    async def _replay(request: Request, exc: Replay) -> JSONResponse:
        return JSONResponse(
            exc.body, status_code=exc.status_code, headers={"Idempotent-Replayed": "true"}
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, code, detail, errors = _validation_errors(exc)
        title = "The body is not valid JSON" if status == 400 else "The request is not valid"
        return problem(request, status=status, code=code, title=title, detail=detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = {
            404: ("route_not_found", "No such route"),
            405: ("method_not_allowed", "Method not allowed on this route"),
            413: ("payload_too_large", PayloadTooLarge.title),
        }.get(exc.status_code, (f"http_{exc.status_code}", "HTTP error"))
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; RFC 9110 wants all.
            path = request.scope.get("path", "")
            allowed = {
                method
                for regex, methods in getattr(request.app.state, "route_methods", ())
                if regex.match(path)
                for method in methods
            }
            if allowed:
                headers["Allow"] = ", ".join(sorted(allowed))
        return problem(
            request,
            status=exc.status_code,
            code=code,
            title=title,
            detail=str(exc.detail),
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.failures.labels(route=route).inc()
        log.exception(
            "unhandled error on %s %s (correlation id %s)",
            request.method,
            request.url.path,
            correlation_id(request),
        )
        return problem(
            request,
            status=500,
            code="internal_error",
            title="Internal error",
            detail="the request failed unexpectedly; it was logged under its correlation id",
            # The request guard answers it (and keeps the connection); should an error
            # escape the guard itself, ServerErrorMiddleware sends it, past the guard.
            headers={CORRELATION_HEADER: correlation_id(request)},
        )
