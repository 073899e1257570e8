"""What every command shares: settings, the database, the operator as actor, a tenant's
transaction with its catalog, and one-line failures."""

from __future__ import annotations

import asyncio
import getpass
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from sqlalchemy.engine import make_url
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


# The exit status of a command that cannot run where it is: its configuration is wrong,
# or its database is missing, unreachable or not migrated. 1 is a refusal of the request.
SETUP_FAILED = 2


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as error:
        fail(f"configuration: {error}", SETUP_FAILED)


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def database_problem(error: BaseException, url: str) -> str | None:
    """One line that says what is wrong with the database at `url` and what to do, for the
    failures an operator fixes outside Billfold; None for any other error (a bug)."""
    where = _shown(url)
    if isinstance(error, DBAPIError) and no_schema(error):
        return (
            f"{where} holds no Billfold tables: run `billfold init` for a new deployment "
            "or `billfold migrate` (`make run` does both)"
        )
    sqlite = make_url(url).get_backend_name() == "sqlite"
    reason = _first_line(error)
    if sqlite and isinstance(error, DBAPIError) and "unable to open" in str(error.orig):
        return f"cannot open the SQLite database {where}: is its folder there and writable?"
    cause = _os_error(error)
    if cause is not None:
        if sqlite:
            return f"cannot open the SQLite database {where}: {_first_line(cause)}"
        return (
            f"cannot reach the database at {where}: {_first_line(cause)}; is PostgreSQL "
            "running there, and is BILLFOLD_DATABASE_URL right?"
        )
    sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None) or getattr(
        error, "sqlstate", None
    )
    if sqlstate in _CONNECT_REFUSED:
        return f"the database at {where} refused the connection: {reason}"
    return None


# PostgreSQL's answers to a connection it will not take: a wrong password, an unknown
# role or database, too many connections.
_CONNECT_REFUSED = {"28000", "28P01", "3D000", "53300", "57P03"}


def _os_error(error: BaseException) -> OSError | None:
    """The OSError (refused, unresolvable, timed out) behind `error`, if there is one."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError):
            return current
        orig = getattr(current, "orig", None)
        current = (
            orig if isinstance(orig, BaseException) else current.__cause__ or current.__context__
        )
    return None


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _shown(url: str) -> str:
    """The URL as it may be printed: without its password."""
    return make_url(sync_url(url)).render_as_string(hide_password=True)


@contextmanager
def database_failures(url: str) -> Iterator[None]:
    """Turn the database failures an operator can fix into one line on stderr, exit 2."""
    try:
        yield
    except (DBAPIError, OSError) as error:
        message = database_problem(error, url)
        if message is None:
            raise
        fail(message, SETUP_FAILED)


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
        with database_failures(settings.database_url):
            return asyncio.run(runner())
    except BillfoldError as error:
        lines = [f"{error.code}: {error.detail}"]
        lines += [f"  {e.pointer or e.parameter or ''} {e.detail}".rstrip() for e in error.errors]
        fail("\n".join(lines))


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
    if parsed.tzinfo is None:
        fail(f"{text!r} has no time zone; add Z or +00:00")
    return parsed
