"""The HTTP edge shared by every router: RFC 9457 problems, request guard, metrics.

Every error leaves as `application/problem+json` with a stable `code`, including the
framework's own 404, 405 and 422. A refusal is never a 500; an unexpected failure is a
500 that is logged with its correlation id and counted in `/metrics`.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billfold.kit.errors import BillfoldError, FieldError, PayloadTooLarge
from billfold.kit.idempotency import Replay

log = logging.getLogger("billfold.http")
M = TypeVar("M", bound=BaseModel)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://billfold.dev/problems/"
CORRELATION_HEADER = "x-correlation-id"
# Where a read-only request leaves its unit of work for the guard to close (see deps).
UNIT_STATE_KEY = "billfold_unit"
_CORRELATION = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_CORRELATION_KEY = CORRELATION_HEADER.encode()


class Metrics:
    """The service's counters, on a registry of its own (one per app instance)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "billfold_http_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "billfold_http_request_duration_seconds",
            "Time to answer a request, by route template",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
        )
        self.problems = Counter(
            "billfold_problems",
            "Problem responses sent, by stable code",
            ["code", "status"],
            registry=self.registry,
        )
        # Label lookups cost more than the increments; keep the children at hand.
        self._request_children: dict[tuple[str, str, str], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self.quota_overage = Counter(
            "billfold_quota_overage",
            "Usage beyond every quota bucket, in the meter's units, by feature and enforcement",
            ["feature", "enforcement"],
            registry=self.registry,
        )
        self.consume_batch = Histogram(
            "billfold_consume_batch_size",
            "Consumes recorded together in one batch (group commit)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 500),
            registry=self.registry,
        )
        self.consume_unlocked = Counter(
            "billfold_consume_unlocked",
            "Consumes answered by a batch's unlocked run (PostgreSQL, decision 0018)",
            registry=self.registry,
        )
        self.consume_redrawn = Counter(
            "billfold_consume_redrawn",
            "Consumes drawn again under lock: their account moved during an unlocked draw, "
            "they write the event log, or their key was stored already",
            registry=self.registry,
        )
        self.failures = Counter(
            "billfold_unhandled_errors",
            "Requests that failed with an unexpected error (HTTP 500)",
            ["route"],
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, duration_s: float) -> None:
        key = (method, route, str(status))
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(*key)
        counter.inc()
        histogram = self._latency_children.get(route)
        if histogram is None:
            histogram = self._latency_children[route] = self.latency.labels(route)
        histogram.observe(duration_s)


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
    """The OpenAPI `requestBody` of a route that reads its body with `read_json`."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
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


def _pointer(location: tuple[Any, ...]) -> FieldError:
    kind, *rest = location or ("body",)
    path = "/".join(str(part).replace("~", "~0").replace("/", "~1") for part in rest)
    if kind == "body":
        return FieldError("", pointer="#/" + path if path else "#")
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
            # ServerErrorMiddleware sends this response outside RequestGuard's `send`.
            headers={CORRELATION_HEADER: correlation_id(request)},
        )


class RequestGuard:
    """Pure ASGI middleware: correlation ids, the body size limit, and request metrics.

    `short_paths` maps `(method, path)` to an ASGI app that answers that exact route
    itself, past FastAPI's routing, exception middleware and dependency solving (see
    `deps.short_paths`). The app fills the mapping once its routes are declared.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        metrics: Metrics,
        short_paths: Mapping[tuple[str, str], ASGIApp] | None = None,
        large_bodies: Mapping[tuple[str, str], int] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # (method, path) -> a larger body limit, for the routes that take batches
        self.large_bodies = large_bodies or {}
        self.metrics = metrics
        self.short_paths = short_paths if short_paths is not None else {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_s = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        supplied = headers.get(_CORRELATION_KEY, b"").decode("latin-1")
        correlation = supplied if _CORRELATION.match(supplied) else os.urandom(16).hex()
        scope.setdefault("state", {})["correlation_id"] = correlation
        status_holder = {"status": 500}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                headers = message.setdefault("headers", [])
                if not any(name == _CORRELATION_KEY for name, _ in headers):
                    headers.append((_CORRELATION_KEY, correlation.encode()))
            await send(message)

        declared = headers.get(b"content-length")
        limit = self.large_bodies.get((scope["method"], scope["path"]), self.max_body_bytes)
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._too_large(scope, send_with_headers, limit)
        else:
            app = self.short_paths.get((scope["method"], scope["path"]), self.app)
            try:
                await app(scope, self._limited(receive, limit), send_with_headers)
            finally:  # an unhandled error propagates from here; count its 500 too
                unit = scope["state"].get(UNIT_STATE_KEY)
                if unit is not None:  # a read-only request's unit of work, if it had one
                    await unit.close()
                self._observe(scope, status_holder["status"], started_s)
            return
        self._observe(scope, status_holder["status"], started_s)

    def _observe(self, scope: Scope, status: int, started_s: float) -> None:
        route = getattr(scope.get("route"), "path", "unmatched")
        self.metrics.observe(scope["method"], route, status, time.perf_counter() - started_s)

    def _limited(self, receive: Receive, limit: int) -> Receive:
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # FastAPI turns any other exception raised while it reads a body into
                    # a 400; it lets HTTPException through, and `_http` maps it below.
                    raise StarletteHTTPException(
                        413, detail=f"the body is larger than {limit} bytes"
                    )
            return message

        return limited

    async def _too_large(
        self, scope: Scope, send: Callable[[Message], Awaitable[None]], limit: int
    ) -> None:
        response = problem(
            None,
            status=413,
            code="payload_too_large",
            title=PayloadTooLarge.title,
            detail=f"the body is larger than {limit} bytes",
        )
        self.metrics.problems.labels(code="payload_too_large", status="413").inc()

        async def drain() -> Message:
            return {"type": "http.disconnect"}

        await response(scope, drain, send)
