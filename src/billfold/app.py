"""`create_app(settings)`: the whole HTTP service, wired once."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from billfold import __version__
from billfold.audit.api import router as audit_router
from billfold.billing import deps as billing_deps
from billfold.billing.api import router as test_clocks_router
from billfold.billing.close import CloseSettings
from billfold.catalog.api import router as catalog_router
from billfold.catalog.catalog import CatalogCache
from billfold.claims import deps as claims_deps
from billfold.claims.api import router as claims_router
from billfold.customers.api import router as customers_router
from billfold.entitlements.api import router as entitlements_router
from billfold.grants import deps as grants_deps
from billfold.grants.api import router as grants_router
from billfold.grants.snapshots import SnapshotCache
from billfold.http import docs, openapi, problems
from billfold.http.bodies import json_response
from billfold.http.calls import ReadCall, Runtime, permission_of, short_path, short_paths
from billfold.http.guard import RequestGuard
from billfold.http.metrics import Metrics
from billfold.invoicing.api import router as invoices_router
from billfold.invoicing.records import Invoicing
from billfold.kit import eventlog
from billfold.kit.changes import ChangeFeed
from billfold.kit.clock import Clock, SystemClock
from billfold.kit.db import Database
from billfold.kit.invariants import InvariantViolation
from billfold.kit.schemas import Out
from billfold.metering import deps as metering_deps
from billfold.metering.api import EVENTS_PATH
from billfold.metering.api import router as metering_router
from billfold.settings import Settings
from billfold.subscriptions.api import router as subscriptions_router
from billfold.tenants.api import router as tenants_router
from billfold.tenants.cache import PrincipalCache
from billfold.wallets.api import router as wallets_router

PERMISSION_EXTENSION = "x-billfold-permission"
SECURITY_SCHEME = "apiKey"


class PingOut(Out):
    ok: bool
    tenant_id: str
    scope: str


def create_app(
    settings: Settings, *, clock: Clock | None = None, database: Database | None = None
) -> FastAPI:
    database = database or Database(settings.database_url, pool_size=settings.database_pool_size)
    database.key_event_log(eventlog.chain_key(settings.secret_key))
    metrics = Metrics()
    changes = ChangeFeed(settings.database_url, metrics.registry)
    principals = PrincipalCache()
    changes.subscribe(principals.on_change, principals.reset)
    # Each domain wires its own collaborators; a route asks its call for them by type.
    snapshots = grants_deps.wire(changes)
    metering = metering_deps.wire(
        settings,
        database,
        metrics.registry,
        snapshots=lambda: snapshots if changes.live else None,
    )
    close_settings = billing_deps.wire(settings)  # the invoicing file, read once
    runtime = Runtime(
        settings=settings,
        database=database,
        clock=clock or SystemClock(),
        changes=changes,
        principals=principals,
        catalogs=CatalogCache(),
        collaborators={
            SnapshotCache: snapshots,
            metering_deps.Metering: metering,
            claims_deps.Claims: claims_deps.wire(settings),
            CloseSettings: close_settings,
            Invoicing: close_settings.invoicing,
        },
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await changes.start()
        yield
        await changes.stop()
        await metering.close()
        await database.dispose()

    app = _Billfold(
        title="Billfold",
        version=__version__,
        description="Billing and entitlements: plans as configuration, grants, checks, "
        "claim codes and a hash-chained event log. Errors are RFC 9457 problem+json.",
        lifespan=lifespan,
        # Billfold exports its own Prometheus metrics and logs; FastAPI's OpenTelemetry
        # hooks cost ~30 µs a request just to find out that nobody configured them.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # FastAPI's own pages load Swagger UI and ReDoc from a CDN: docs.install serves them.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    docs.install(app)
    app.state.runtime = runtime
    problems.install(app, metrics)
    # Filled at the end, once every route is declared.
    fast: dict[tuple[str, str], Any] = {}
    app.state.short_paths = fast
    guard = functools.partial(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        short_paths=fast,
        large_bodies={("POST", EVENTS_PATH): settings.max_events_body_bytes},
    )
    app.add_middleware(guard)
    app.short_path_guard = guard(_unreachable)

    @app.get("/healthz", operation_id="healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers. Touches nothing."""
        return {"status": "ok"}

    @app.get("/readyz", operation_id="readyz", tags=["operations"])
    async def readyz() -> dict[str, str]:
        """Readiness: the database answers."""
        async with database.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return {"status": "ready"}

    @app.get("/metrics", operation_id="metrics", tags=["operations"], response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/ping", operation_id="ping", tags=["operations"], response_model=PingOut)
    @short_path
    async def ping(request: Request, call: ReadCall) -> Response:
        """An authenticated request that does nothing else: the benchmark's baseline.

        It takes the same short path as the check API, so the two compare like for like."""
        return json_response(
            PingOut(ok=True, tenant_id=call.ctx.tenant_id, scope=call.principal.scope.value)
        )

    routers = (  # the hot check routes first: routes are matched in order
        entitlements_router,
        grants_router,
        tenants_router,
        catalog_router,
        customers_router,
        subscriptions_router,
        invoices_router,
        test_clocks_router,
        claims_router,
        metering_router,
        audit_router,
        wallets_router,
    )
    for router in routers:
        _publish_permissions(router.routes)
        app.include_router(router)
    _publish_permissions(app.routes)
    _publish_security_scheme(app)
    openapi.install(app)
    # FastAPI keeps an included router as one entry of `app.routes`; its own routes are
    # the ones that serve (the routers are included without prefix or dependencies).
    routes = [*app.routes, *(route for router in routers for route in router.routes)]
    fast.update(short_paths(routes))
    app.state.route_methods = [
        (route.path_regex, frozenset(route.methods or ()))
        for route in routes
        if isinstance(route, Route)
    ]
    return app


class _Billfold(FastAPI):
    """FastAPI, with the hot routes (`deps.short_path`: the check API, consume, ping)
    handed by the server straight to a request guard of their own. Starlette's error,
    telemetry and body-limit middleware, which those routes would otherwise pass
    through, do nothing for them: the guard limits the body and answers a 500 itself,
    and so does the short path. That is ~2 µs of each such request (decision 0013)."""

    short_path_guard: RequestGuard | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guard = self.short_path_guard
        if (
            guard is not None
            and scope["type"] == "http"
            and (scope["method"], scope["path"]) in guard.short_paths
            and not self.root_path
        ):
            scope["app"] = self  # as Starlette sets it: the routes read `app.state`
            await guard(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def _unreachable(scope: Scope, receive: Receive, send: Send) -> None:
    """The app behind the short paths' guard, which answers every request it is given
    from its short paths."""
    raise InvariantViolation(f"no short path for {scope.get('method')} {scope.get('path')}")


def _publish_permissions(routes: list[Any]) -> None:
    """Write each route's required permission into its OpenAPI operation."""
    for route in routes:
        if not isinstance(route, APIRoute):
            continue
        permission = permission_of(route.dependant)
        if permission is not None:
            route.openapi_extra = {
                **(route.openapi_extra or {}),
                PERMISSION_EXTENSION: str(permission),
                "security": [{SECURITY_SCHEME: []}],
            }


def _publish_security_scheme(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes[SECURITY_SCHEME] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: `Authorization: Bearer bfk_...`",
        }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
