"""The outermost middleware: correlation ids, the body size limit, request metrics, the
access log, and the short paths that answer the hot routes past FastAPI's routing."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billfold.http.metrics import Metrics
from billfold.http.problems import CORRELATION_HEADER, UNIT_STATE_KEY, answer_exception, problem
from billfold.kit.errors import PayloadTooLarge
from billfold.kit.logs import CORRELATION, access

# Matched whole (fullmatch): `$` would also let a trailing newline through.
_CORRELATION = re.compile(rb"[A-Za-z0-9._:-]{1,100}")
_CORRELATION_KEY = CORRELATION_HEADER.encode()
_random_bits = random.getrandbits
# Where an authenticated request leaves its tenant's id, for the access line (see calls).
TENANT_STATE_KEY = "tenant_id"


class RequestGuard:
    """Pure ASGI middleware: correlation ids, the body size limit, request metrics and
    the access log (one line a request, `kit.logs`).

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
        # X-Correlation-Id, or else the X-Request-ID a proxy may have set; kept if it is
        # 1-100 of [A-Za-z0-9._:-], replaced by a new one otherwise.
        supplied = headers.get(_CORRELATION_KEY) or headers.get(b"x-request-id")
        if supplied is not None and _CORRELATION.fullmatch(supplied):
            correlation = supplied.decode("ascii")
        else:
            # A correlation id names a request and guards nothing: `random` (seeded
            # from the OS, and again in each forked worker), not a system call a request.
            correlation = f"{_random_bits(128):032x}"
        scope.setdefault("state", {})["correlation_id"] = correlation
        # Every line logged while serving this request carries its id. Left set when
        # the request fails: the catch-all 500 handler and the server log it after us.
        token = CORRELATION.set(correlation)
        outcome = [500, False]  # the status answered, and whether the answer has begun

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = outcome[0] = message["status"]
                outcome[1] = True
                headers = message.setdefault("headers", [])
                # Only a problem (4xx, 5xx) may carry the header already.
                if status < 400 or not any(name == _CORRELATION_KEY for name, _ in headers):
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
            except Exception as exc:
                if outcome[1]:
                    raise  # half an answer is out: only closing the connection ends it
                # Answer the 500 here, as any other problem. Starlette's outermost
                # ServerErrorMiddleware would answer it too, but then re-raise, and the
                # server closes a connection whose app raised: the client's next request
                # on it would fail as well.
                response = await answer_exception(Request(scope), exc)
                await response(scope, receive, send_with_headers)
            finally:  # count every answer, a 500 too
                unit = scope["state"].get(UNIT_STATE_KEY)
                if unit is not None:  # a read-only request's unit of work, if it had one
                    await unit.close()
                self._observe(scope, outcome[0], started_s)
            CORRELATION.reset(token)
            return
        self._observe(scope, outcome[0], started_s)
        CORRELATION.reset(token)

    def _observe(self, scope: Scope, status: int, started_s: float) -> None:
        elapsed_s = time.perf_counter() - started_s
        route = getattr(scope.get("route"), "path", "unmatched")
        self.metrics.observe(scope["method"], route, status, elapsed_s)
        state = scope["state"]
        access(
            scope["method"],
            scope["path"],
            status,
            elapsed_s,
            state["correlation_id"],
            state.get(TENANT_STATE_KEY),
        )

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
