"""`create_app(settings)`: the whole HTTP service, wired once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.responses import Response
from starlette.routing import Route

from billfold import __version__
from billfold.audit.api import router as audit_router
from billfold.catalog.api import router as catalog_router
from billfold.catalog.catalog import CatalogCache
from billfold.claims.api import router as claims_router
from billfold.customers.api import router as customers_router
from billfold.deps import ReadCall, Services, permission_of, short_path, short_paths
from billfold.entitlements.api import router as entitlements_router
from billfold.entitlements.snapshot import SnapshotCache
from billfold.kit import http
from billfold.kit.changes import ChangeFeed
from billfold.kit.clock import Clock, SystemClock
from billfold.kit.db import Database
from billfold.kit.schemas import Out
from billfold.metering.ai_api import router as ai_router
from billfold.metering.api import EVENTS_PATH
from billfold.metering.api import router as metering_router
from billfold.metering.batcher import ConsumeBatcher
from billfold.metering.stream import UsagePublisher
from billfold.settings import Settings
from billfold.subscriptions.api import router as subscriptions_router
from billfold.tenants.api import router as tenants_router
from billfold.tenants.cache import PrincipalCache

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
    metrics = http.Metrics()
    changes = ChangeFeed(settings.database_url, metrics.registry)
    snapshots = SnapshotCache()
    services = Services(
        settings=settings,
        database=database,
        clock=clock or SystemClock(),
        catalogs=CatalogCache(),
        metrics=metrics,
        changes=changes,
        principals=PrincipalCache(),
        snapshots=snapshots,
        consumer=ConsumeBatcher(
            database,
            late_window=timedelta(seconds=settings.usage_late_window_s),
            snapshots=lambda: snapshots if changes.live else None,
            on_batch=metrics.consume_batch.observe,
            on_redraw=metrics.consume_redrawn.inc,
            on_unlocked=metrics.consume_unlocked.inc,
        ),
        publisher=(
            UsagePublisher(settings.ingest_url, settings.ingest_stream)
            if settings.ingest_url
            else None
        ),
    )
    services.changes.subscribe(services.principals.on_change, services.principals.reset)
    services.changes.subscribe(services.snapshots.on_change, services.snapshots.reset)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await services.changes.start()
        yield
        await services.changes.stop()
        await services.consumer.close()
        if services.publisher is not None:
            await services.publisher.close()
        await database.dispose()

    app = FastAPI(
        title="Billfold",
        version=__version__,
        description="Billing and entitlements: plans as configuration, grants, checks, "
        "claim codes and a hash-chained event log. Errors are RFC 9457 problem+json.",
        lifespan=lifespan,
        # Billfold exports its own Prometheus metrics and logs; FastAPI's OpenTelemetry
        # hooks cost ~30 µs a request just to find out that nobody configured them.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    http.install(app, metrics)
    # Filled at the end, once every route is declared.
    fast: dict[tuple[str, str], Any] = {}
    app.state.short_paths = fast
    app.add_middleware(
        http.RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        metrics=metrics,
        short_paths=fast,
        large_bodies={("POST", EVENTS_PATH): settings.max_events_body_bytes},
    )

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers. Touches nothing."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> dict[str, str]:
        """Readiness: the database answers."""
        async with database.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return {"status": "ready"}

    @app.get("/metrics", tags=["operations"], response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/ping", tags=["operations"], response_model=PingOut)
    @short_path
    async def ping(request: Request, call: ReadCall) -> Response:
        """An authenticated request that does nothing else: the benchmark's baseline.

        It takes the same short path as the check API, so the two compare like for like."""
        return http.json_response(
            PingOut(ok=True, tenant_id=call.ctx.tenant_id, scope=call.principal.scope.value)
        )

    routers = (  # the hot check routes first: routes are matched in order
        entitlements_router,
        tenants_router,
        catalog_router,
        customers_router,
        subscriptions_router,
        claims_router,
        metering_router,
        ai_router,
        audit_router,
    )
    for router in routers:
        _publish_permissions(router.routes)
        app.include_router(router)
    _publish_permissions(app.routes)
    _publish_security_scheme(app)
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
