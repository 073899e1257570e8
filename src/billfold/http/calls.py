"""What every route receives: an authorised call with its unit of work and context.

`authorize(Permission.X)` is the one place a route states who may call it. The app reads
the permission back from each route to publish it in the OpenAPI document, and a test
walks every route with every scope against it.

Only what every call needs is central (`Runtime`): the database, the clock, the settings,
the caches that authentication and the catalog read, and the change feed that keeps them
correct. Each domain wires its own collaborators (`<domain>/deps.py`), and a route asks
its call for them by type: `call.collaborator(Metering)`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, ParamSpec, TypeVar, cast

from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession
from starlette import types as asgi
from starlette.routing import BaseRoute

from billfold.catalog.catalog import Catalog, CatalogCache
from billfold.http.guard import TENANT_STATE_KEY
from billfold.http.problems import UNIT_STATE_KEY, answer_exception, correlation_id
from billfold.kit import changes, idempotency
from billfold.kit.changes import ChangeFeed
from billfold.kit.clock import Clock
from billfold.kit.context import Context
from billfold.kit.db import Database, UnitOfWork
from billfold.kit.errors import AgentForbidden, InsufficientScope, Unauthenticated
from billfold.kit.invariants import InvariantViolation
from billfold.settings import Settings
from billfold.tenants import service as tenants
from billfold.tenants.cache import PrincipalCache
from billfold.tenants.scopes import GRANTED, Permission, Scope
from billfold.tenants.service import Principal

T = TypeVar("T")


@dataclass(frozen=True)
class Runtime:
    """Built once by `create_app` and shared by every call: what authorization, the call
    context and the unit of work need, and the domains' collaborators by type."""

    settings: Settings
    database: Database
    clock: Clock
    changes: ChangeFeed
    principals: PrincipalCache
    catalogs: CatalogCache
    collaborators: dict[type, Any]


@dataclass(frozen=True)
class Call:
    unit: UnitOfWork
    ctx: Context
    principal: Principal
    runtime: Runtime
    request: Request
    # (key, status code) when the request carries an Idempotency-Key for a replayable route
    idempotency: tuple[str, int] | None = None

    @property
    def client_address(self) -> str:
        return client_address(self.request, self.runtime.settings)

    @property
    def session(self) -> AsyncSession:
        """The request's session, opened on first use; committed once, by `authorize`."""
        return self.unit.session

    async def catalog(self) -> Catalog:
        tenant_id, revision = self.ctx.tenant_id, self.principal.catalog_revision
        cached = self.runtime.catalogs.cached(tenant_id, revision)
        if cached is not None:
            return cached
        return await self.runtime.catalogs.get(self.session, tenant_id, revision)

    def collaborator(self, kind: type[T]) -> T:
        """The collaborator of this type that a domain wired (see `<domain>/deps.py`)."""
        return cast(T, self.runtime.collaborators[kind])

    def cache(self, kind: type[T]) -> T | None:
        """A collaborator that caches what the change feed invalidates, while the feed
        keeps it correct; None otherwise (while the feed is down, or on an in-memory
        SQLite database, which has none)."""
        return self.collaborator(kind) if self.runtime.changes.live else None


def client_address(request: Request, settings: Settings) -> str:
    if settings.trust_forwarded_for:
        forwarded = request.headers.get("x-forwarded-for", "")
        first = forwarded.split(",")[0].strip()
        if first:
            return first[:64]
    return request.client.host if request.client else "unknown"


def authorize(permission: Permission, *, commits_itself: bool = False) -> Any:
    """The dependency that authenticates a request and gives it its `Call`.

    A state-changing route gets a generator dependency that commits before the response
    is sent. A read-only route gets a plain one. Its unit of work, if it opened a session
    at all, is rolled back and closed by the request guard once the answer is out, which
    spares the hot read paths FastAPI's exit-stack machinery.
    """
    if permission.changes_state and not commits_itself:

        async def write_dependency(request: Request) -> AsyncIterator[Call]:
            runtime: Runtime = request.app.state.runtime
            unit = runtime.database.unit(write=True)
            try:
                yield await _open_call(request, runtime, unit, permission)
                await unit.commit()
                if unit.opened:
                    # Committed: this process sees its own changes at once; the others
                    # hear of them through the change stream.
                    runtime.changes.apply(changes.pending(unit.session))
            except BaseException:
                await unit.rollback()
                raise
            finally:
                await unit.close()

        write_dependency.permission = permission  # type: ignore[attr-defined]
        return Depends(write_dependency, scope="function")

    async def read_dependency(request: Request) -> Call:
        runtime: Runtime = request.app.state.runtime
        unit = runtime.database.unit(write=False)
        request.scope.setdefault("state", {})[UNIT_STATE_KEY] = unit
        return await _open_call(request, runtime, unit, permission)

    read_dependency.permission = permission  # type: ignore[attr-defined]
    read_dependency.commits_itself = commits_itself  # type: ignore[attr-defined]
    return Depends(read_dependency)


async def _open_call(
    request: Request, runtime: Runtime, unit: UnitOfWork, permission: Permission
) -> Call:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("send an API key as `Authorization: Bearer bfk_...`")
    principal = await _authenticate(runtime, unit, token.strip())
    if permission not in GRANTED[principal.scope]:
        if principal.scope is Scope.AGENT and permission.changes_state:
            raise AgentForbidden(
                "agent keys may read and propose, never change state; a human admin must do this"
            )
        raise InsufficientScope(
            f"a {principal.scope} key may not do this (needs {permission} permission)"
        )
    request.scope["state"][TENANT_STATE_KEY] = principal.tenant_id  # for the access line
    ctx = Context(
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        correlation_id=correlation_id(request),
        now=runtime.clock.now(),
    )
    return Call(
        unit=unit,
        ctx=ctx,
        principal=principal,
        runtime=runtime,
        request=request,
        idempotency=(
            await _claim_idempotency_key(request, unit, ctx) if permission.changes_state else None
        ),
    )


async def _authenticate(runtime: Runtime, unit: UnitOfWork, token: str) -> Principal:
    if not runtime.changes.live:
        return await tenants.authenticate(unit.session, token)
    fingerprint = runtime.principals.fingerprint(token)
    principal = runtime.principals.get(fingerprint)
    if principal is None:
        stamp = runtime.principals.stamp()
        principal = await tenants.authenticate(unit.session, token)
        runtime.principals.store(fingerprint, principal, stamp)
    return principal


async def _claim_idempotency_key(
    request: Request, unit: UnitOfWork, ctx: Context
) -> tuple[str, int] | None:
    key = request.headers.get(idempotency.HEADER)
    route = request.scope.get("route")
    if key is None or not getattr(getattr(route, "endpoint", None), "idempotent", False):
        return None
    idempotency.check_key(key)
    print_ = idempotency.fingerprint(request.method, request.url.path, await request.body())
    await idempotency.claim(unit.session, ctx.tenant_id, key, print_, ctx.now)
    return key, int(getattr(route, "status_code", None) or 200)


P = ParamSpec("P")
R = TypeVar("R")


def idempotent(endpoint: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Make a creating route replayable under `Idempotency-Key`: its answer is stored in
    the same transaction as its effect."""

    @functools.wraps(endpoint)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        result = await endpoint(*args, **kwargs)
        call = next((value for value in kwargs.values() if isinstance(value, Call)), None)
        if call is not None and call.idempotency is not None:
            key, status_code = call.idempotency
            await idempotency.remember(
                call.session, call.ctx.tenant_id, key, status_code, jsonable_encoder(result)
            )
        return result

    wrapper.idempotent = True  # type: ignore[attr-defined]
    return wrapper


def short_path(endpoint: Callable[[Request, Call], Awaitable[Response]]) -> Any:
    """Let the request guard answer this route itself (`short_paths`): a read-only one,
    or one whose writes commit in transactions of their own.

    The hot routes (the check API, consume, and ping, the benchmark baseline) skip FastAPI's
    router, exception middleware and dependency solving, which cost more than the check.
    The endpoint takes exactly `(request, call)` and returns a `Response`; it stays an
    ordinary FastAPI route too, so OpenAPI, the permission table and its tests are the same.
    """
    endpoint.short_path = True  # type: ignore[attr-defined]
    return endpoint


def short_paths(routes: Iterable[BaseRoute]) -> dict[tuple[str, str], asgi.ASGIApp]:
    """The ASGI apps that answer the `@short_path` routes among `routes`, by (method, path)."""
    paths: dict[tuple[str, str], asgi.ASGIApp] = {}
    for route in routes:
        if not (isinstance(route, APIRoute) and getattr(route.endpoint, "short_path", False)):
            continue
        permission = permission_of(route.dependant)
        params = list(inspect.signature(route.endpoint).parameters)
        if (
            permission is None
            or (permission.changes_state and not _commits_itself(route.dependant))
            or route.param_convertors
            or params != ["request", "call"]
        ):
            raise InvariantViolation(
                f"short path {route.path}: needs a fixed path, a read permission (or "
                "one that commits itself) and exactly (request, call)"
            )
        for method in route.methods or ():
            paths[(method, route.path)] = _short_path(route, permission)
    return paths


def _short_path(route: APIRoute, permission: Permission) -> asgi.ASGIApp:
    endpoint = route.endpoint

    async def answer(scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send) -> None:
        scope["route"] = route
        request = Request(scope, receive)
        runtime: Runtime = request.app.state.runtime
        unit = runtime.database.unit(write=False)
        try:
            call = await _open_call(request, runtime, unit, permission)
            response: Response = await endpoint(request, call)
        except Exception as exc:
            response = await answer_exception(request, exc)
        finally:
            await unit.close()
        await response(scope, receive, send)

    return answer


def _commits_itself(dependant: Dependant) -> bool:
    return any(
        getattr(sub.call, "commits_itself", False) or _commits_itself(sub)
        for sub in dependant.dependencies
    )


def permission_of(dependant: Dependant) -> Permission | None:
    """The permission a route's `authorize` dependency demands, if it has one."""
    for sub in dependant.dependencies:
        permission = getattr(sub.call, "permission", None)
        if permission is not None:
            return cast(Permission, permission)
        found = permission_of(sub)
        if found is not None:
            return found
    return None


ReadCall = Annotated[Call, authorize(Permission.READ)]
CheckCall = Annotated[Call, authorize(Permission.CHECK)]
ReportCall = Annotated[Call, authorize(Permission.REPORT)]
# A report whose writes commit in transactions of their own (consume's group commit): the
# request's own unit of work only reads, so it never holds SQLite's write lock meanwhile.
SelfCommittingReportCall = Annotated[Call, authorize(Permission.REPORT, commits_itself=True)]
RedeemCall = Annotated[Call, authorize(Permission.REDEEM)]
AdminCall = Annotated[Call, authorize(Permission.ADMIN)]
