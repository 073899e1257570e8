"""What every command shares: settings, the database, the operator as actor, a tenant's
transaction with its catalog, and one-line failures."""

from __future__ import annotations

import asyncio
import getpass
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog import catalog as catalog_reader
from billfold.catalog import plansfile
from billfold.catalog.catalog import Catalog
from billfold.catalog.plansfile import PlansFileError
from billfold.kit import eventlog
from billfold.kit.clock import SystemClock
from billfold.kit.context import Actor, Context
from billfold.kit.db import Database, sync_url
from billfold.kit.errors import BillfoldError
from billfold.settings import Settings, SettingsError
from billfold.tenants import service as tenants

T = TypeVar("T")

DEFAULT_TENANT = "default"
TenantOption = Annotated[str, typer.Option("--tenant", help="tenant slug")]


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as error:
        fail(f"configuration: {error}")
        raise  # unreachable


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def operator() -> Actor:
    return Actor(kind="operator", id=f"cli:{getpass.getuser()}", scope="admin")


def run(work: Callable[[Database], Awaitable[T]]) -> T:
    settings = load_settings()

    async def runner() -> T:
        database = Database(settings.database_url, pool_size=2)
        database.key_event_log(eventlog.chain_key(settings.secret_key))
        try:
            return await work(database)
        finally:
            await database.dispose()

    try:
        return asyncio.run(runner())
    except BillfoldError as error:
        lines = [f"{error.code}: {error.detail}"]
        lines += [f"  {e.pointer or e.parameter or ''} {e.detail}".rstrip() for e in error.errors]
        fail("\n".join(lines))
        raise  # unreachable
    except DBAPIError as error:
        if no_schema(error):
            fail(
                f"{sync_url(settings.database_url)} holds no Billfold tables: "
                "run `billfold migrate` first (`make run` does)"
            )
        raise


def no_schema(error: DBAPIError) -> bool:
    """The database answered that a table does not exist: it was never migrated."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    return sqlstate == "42P01" or "no such table" in str(error.orig)


def in_tenant(slug: str, work: Callable[[AsyncSession, Context, Catalog], Awaitable[T]]) -> T:
    """Run `work` in one transaction of the tenant, with its catalog, as the operator."""

    async def unit(database: Database) -> T:
        async with database.transaction() as session:
            tenant = await tenants.tenant_by_slug(session, slug)
            catalog = await catalog_reader.current(session, tenant.id)
            ctx = Context(
                tenant_id=tenant.id,
                actor=operator(),
                correlation_id=f"cli-{uuid.uuid4().hex[:16]}",
                now=SystemClock().now(),
            )
            return await work(session, ctx, catalog)

    return run(unit)


def load_plans(path: Path) -> plansfile.CatalogSpec:
    try:
        return plansfile.load(path)
    except PlansFileError as error:
        for line in error.errors:
            typer.echo(line, err=True)
        typer.echo(f"{path}: {len(error.errors)} problem(s)", err=True)
        raise typer.Exit(1) from None


def moment(text: str | None, *, end_of_day: bool = False) -> datetime | None:
    """`2027-06-30` (a whole day, UTC) or a full ISO 8601 instant with a zone."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            at = time.max if end_of_day else time.min
            moment = datetime.combine(day, at, tzinfo=UTC)
            return moment + timedelta(microseconds=1) if end_of_day else moment
        parsed = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{text!r} is not a date (2027-06-30) or an instant (2027-06-30T12:00:00Z)")
        raise  # unreachable
    if parsed.tzinfo is None:
        fail(f"{text!r} has no time zone; add Z or +00:00")
    return parsed
