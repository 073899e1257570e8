"""`billfold serve`, `migrate` and `init`: serving the API and setting up a database."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog import service as catalog_service
from billfold.catalog.catalog import Catalog
from billfold.cli.common import (
    DEFAULT_TENANT,
    SETUP_FAILED,
    TenantOption,
    database_failures,
    fail,
    in_tenant,
    load_plans,
    load_settings,
    operator,
    run,
)
from billfold.kit import logs, migrate
from billfold.kit.clock import SystemClock
from billfold.kit.context import Context
from billfold.kit.db import Database
from billfold.metering import deps as metering_deps
from billfold.tenants import repository as tenants_repository
from billfold.tenants import service as tenants
from billfold.tenants.scopes import Scope


def serve(
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every one)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port to listen on")] = 8080,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
) -> None:
    """Serve the HTTP API (uvicorn, uvloop, httptools; decision 0013)."""
    import uvicorn

    settings = load_settings()  # fail early on bad configuration
    logs.configure(settings.log_format, settings.log_level)
    if settings.ingest and not metering_deps.nats_installed():
        fail(metering_deps.NATS_MISSING, SETUP_FAILED)
    # A database that is not there, not migrated or at another revision: one line, not a
    # server that answers 500 on the tables it lacks.
    revisions = run(_revisions)
    needed = migrate.head()
    if revisions != [needed]:
        found = ", ".join(revisions) or "none"
        if all(migrate.known(revision) for revision in revisions):
            fail(
                f"the database is at migration {found}, this release needs {needed}: "
                "run `billfold migrate`",
                SETUP_FAILED,
            )
        fail(
            f"the database is at migration {found}, which this release does not know: "
            "a newer release migrated it; serve with that release",
            SETUP_FAILED,
        )
    uvicorn.run(
        "billfold.asgi:app",
        host=host,
        port=port,
        workers=workers,
        # uvicorn's own loggers go through ours (log_config=None), and the request
        # guard writes the access lines (kit/logs.py, decision 0027).
        log_config=None,
        log_level=settings.log_level.lower(),
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


async def _revisions(database: Database) -> list[str]:
    async with database.connect() as conn:
        result = await conn.execute(text("SELECT version_num FROM alembic_version"))
        return sorted(str(version) for version in result.scalars())


def migrate_command() -> None:
    """Bring the database schema up to date."""
    settings = load_settings()
    with database_failures(settings.database_url):
        migrate.upgrade(settings.database_url)
    typer.echo("database is up to date")


def init(
    plans: Annotated[
        Path | None,
        typer.Option(help="plans file for a new tenant's catalog; later only compared with it"),
    ] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Migrate, create the tenant with an admin key (printed once), and give a new tenant
    its catalog from a plans file. A tenant that has a catalog keeps it: init shows how the
    file differs and leaves applying it to `billfold plans apply` (decision 0029)."""
    settings = load_settings()
    with database_failures(settings.database_url):
        migrate.upgrade(settings.database_url)
    spec = load_plans(plans) if plans else None

    async def work(database: Database) -> None:
        async with database.transaction() as session:
            if await tenants_repository.by_slug(session, tenant) is None:
                now = SystemClock().now()
                created = await tenants.create_tenant(session, tenant, tenant.title(), now)
                ctx = Context(created.id, operator(), f"cli-{uuid.uuid4().hex[:16]}", now)
                _key, token = await tenants.create_key(
                    session, ctx, name="initial admin key", scope=Scope.ADMIN
                )
                typer.echo(f"created tenant {tenant!r}")
                typer.echo("admin API key (shown once, store it now):")
                typer.echo(f"  {token}")
            else:
                typer.echo(f"tenant {tenant!r} exists; `billfold keys create` makes more keys")

    run(work)
    if spec is not None:

        async def first(session: AsyncSession, ctx: Context, _catalog: Catalog) -> None:
            _report(await catalog_service.initialize(session, ctx, spec), plans, tenant)

        in_tenant(tenant, first)


def _report(initial: catalog_service.Initial, file: Path | None, tenant: str) -> None:
    if initial.applied:
        typer.echo(f"plans: applied revision {initial.revision}")
        return
    stored = f"the stored catalog (revision {initial.revision})"
    if initial.changes.empty and not initial.problems:
        typer.echo(f"plans: no changes: {file} matches {stored}")
        return
    typer.echo(f"plans: {stored} is left as it is; {file} differs from it:")
    for line in initial.problems or initial.changes.lines():
        typer.echo(f"  {line}")
    command = f"billfold plans apply {file}"
    if tenant != DEFAULT_TENANT:
        command += f" --tenant {tenant}"
    if initial.problems:
        typer.echo("plans: `plans apply` would refuse the file as it is; fix it first")
    else:
        typer.echo(f"plans: to apply the file to the catalog: {command}")
