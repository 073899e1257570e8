"""The `billfold` command: serve, migrate, init, tenants, keys, plans, grants,
subscriptions, claims and audit. Operators act directly on the database, recorded in
the event log as actor kind `operator`."""

from __future__ import annotations

import asyncio
import getpass
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.audit import service as audit
from billfold.catalog import catalog as catalog_reader
from billfold.catalog import plansfile
from billfold.catalog import service as catalog_service
from billfold.catalog.catalog import Catalog
from billfold.catalog.plansfile import PlansFileError
from billfold.claims import service as claims
from billfold.claims.export import batch_metadata, csv_of
from billfold.customers import service as customers
from billfold.grants import service as grants
from billfold.grants.service import Window
from billfold.kit import migrate
from billfold.kit.clock import SystemClock
from billfold.kit.context import Actor, Context
from billfold.kit.db import Database, sync_url
from billfold.kit.errors import BillfoldError
from billfold.settings import Settings, SettingsError
from billfold.subscriptions import service as subscriptions
from billfold.tenants import repository as tenants_repository
from billfold.tenants import service as tenants
from billfold.tenants.scopes import Scope

T = TypeVar("T")
DEFAULT_TENANT = "default"

app = typer.Typer(help="Billfold: billing and entitlements.", no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants (isolated billing namespaces).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: shown once, stored as hashes.", no_args_is_help=True)
plans_app = typer.Typer(help="Plans files: validate, diff, apply.", no_args_is_help=True)
grants_app = typer.Typer(help="Grant and revoke plans or single features.", no_args_is_help=True)
subs_app = typer.Typer(help="Activate, renew and cancel subscriptions.", no_args_is_help=True)
claims_app = typer.Typer(help="Claim codes: issue and revoke.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained event log.", no_args_is_help=True)
worker_app = typer.Typer(help="Background workers.", no_args_is_help=True)
for sub, name in (
    (tenants_app, "tenants"),
    (keys_app, "keys"),
    (plans_app, "plans"),
    (grants_app, "grants"),
    (subs_app, "subscriptions"),
    (claims_app, "claims"),
    (audit_app, "audit"),
    (worker_app, "worker"),
):
    app.add_typer(sub, name=name)

TenantOption = Annotated[str, typer.Option("--tenant", help="tenant slug")]


def main() -> None:
    app()


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as error:
        _fail(f"configuration: {error}")
        raise  # unreachable


def _fail(message: str, code: int = 1) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _operator() -> Actor:
    return Actor(kind="operator", id=f"cli:{getpass.getuser()}", scope="admin")


def _run(work: Callable[[Database], Awaitable[T]]) -> T:
    settings = _settings()

    async def runner() -> T:
        database = Database(settings.database_url, pool_size=2)
        try:
            return await work(database)
        finally:
            await database.dispose()

    try:
        return asyncio.run(runner())
    except BillfoldError as error:
        lines = [f"{error.code}: {error.detail}"]
        lines += [f"  {e.pointer or e.parameter or ''} {e.detail}".rstrip() for e in error.errors]
        _fail("\n".join(lines))
        raise  # unreachable
    except DBAPIError as error:
        if _no_schema(error):
            _fail(
                f"{sync_url(settings.database_url)} holds no Billfold tables: "
                "run `billfold migrate` first (`make run` does)"
            )
        raise


def _no_schema(error: DBAPIError) -> bool:
    """The database answered that a table does not exist: it was never migrated."""
    sqlstate = getattr(error.orig, "sqlstate", None)
    return sqlstate == "42P01" or "no such table" in str(error.orig)


def _in_tenant(slug: str, work: Callable[[AsyncSession, Context, Catalog], Awaitable[T]]) -> T:
    settings = _settings()

    async def unit(database: Database) -> T:
        async with database.transaction() as session:
            tenant = await tenants.tenant_by_slug(session, slug)
            catalog = await catalog_reader.current(session, tenant.id)
            ctx = Context(
                tenant_id=tenant.id,
                actor=_operator(),
                correlation_id=f"cli-{uuid.uuid4().hex[:16]}",
                now=SystemClock().now(),
            )
            return await work(session, ctx, catalog)

    _ = settings
    return _run(unit)


def _load_plans(path: Path) -> plansfile.CatalogSpec:
    try:
        return plansfile.load(path)
    except PlansFileError as error:
        for line in error.errors:
            typer.echo(line, err=True)
        typer.echo(f"{path}: {len(error.errors)} problem(s)", err=True)
        raise typer.Exit(1) from None


def _moment(text: str | None, *, end_of_day: bool = False) -> datetime | None:
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
        _fail(f"{text!r} is not a date (2027-06-30) or an instant (2027-06-30T12:00:00Z)")
        raise  # unreachable
    if parsed.tzinfo is None:
        _fail(f"{text!r} has no time zone; add Z or +00:00")
    return parsed


# --- serving and setting up ------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8080,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
) -> None:
    """Serve the HTTP API (uvicorn, uvloop, httptools; decision 0013)."""
    import uvicorn

    _settings()  # fail early on bad configuration
    uvicorn.run(
        "billfold.asgi:app",
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        loop="uvloop",
        http="httptools",
        access_log=False,
    )


@worker_app.command("ingest")
def worker_ingest(
    batch: Annotated[int, typer.Option(min=1, max=1000, help="messages per transaction")] = 100,
) -> None:
    """Drain the BILLFOLD_INGEST stream into the store. Run as many as you like.

    SIGTERM or SIGINT stops it after the batch in hand. A worker killed outright leaves
    its batch unacknowledged; another (or the same, restarted) stores it, exactly once."""
    import signal

    from billfold.metering.stream import WorkerOptions, run_worker

    settings = _settings()
    if not settings.ingest_url:
        _fail("set BILLFOLD_INGEST=nats://host:4222 to run the ingest worker")
    options = WorkerOptions(
        url=settings.ingest_url,
        stream=settings.ingest_stream,
        batch=batch,
        late_window=timedelta(seconds=settings.usage_late_window_s),
    )

    async def work(database: Database) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        typer.echo(f"ingest worker: draining {options.stream} from {options.url}")
        return await run_worker(database, options, stop)

    stored = _run(work)
    typer.echo(f"ingest worker: stopped after {stored} messages")


@app.command(name="migrate")
def migrate_command() -> None:
    """Bring the database schema up to date."""
    settings = _settings()
    migrate.upgrade(settings.database_url)
    typer.echo("database is up to date")


@app.command()
def init(
    plans: Annotated[Path | None, typer.Option(help="plans file to apply")] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Migrate, create the tenant with an admin key (printed once), apply a plans file."""
    settings = _settings()
    migrate.upgrade(settings.database_url)
    spec = _load_plans(plans) if plans else None

    async def work(database: Database) -> None:
        async with database.transaction() as session:
            if await tenants_repository.by_slug(session, tenant) is None:
                now = SystemClock().now()
                created = await tenants.create_tenant(session, tenant, tenant.title(), now)
                ctx = Context(created.id, _operator(), f"cli-{uuid.uuid4().hex[:16]}", now)
                _key, token = await tenants.create_key(
                    session, ctx, name="initial admin key", scope=Scope.ADMIN
                )
                typer.echo(f"created tenant {tenant!r}")
                typer.echo("admin API key (shown once, store it now):")
                typer.echo(f"  {token}")
            else:
                typer.echo(f"tenant {tenant!r} exists; `billfold keys create` makes more keys")

    _run(work)
    if spec is not None:

        async def apply(session: AsyncSession, ctx: Context, _catalog: Catalog) -> None:
            changes, revision = await catalog_service.apply(session, ctx, spec)
            typer.echo(
                f"plans: {'no changes' if changes.empty else f'applied revision {revision}'}"
            )

        _in_tenant(tenant, apply)


# --- tenants and keys ------------------------------------------------------------------


@tenants_app.command("create")
def tenants_create(slug: str, name: Annotated[str | None, typer.Option()] = None) -> None:
    async def work(database: Database) -> None:
        async with database.transaction() as session:
            created = await tenants.create_tenant(session, slug, name or slug, SystemClock().now())
            typer.echo(f"created tenant {created.slug} ({created.id})")

    _run(work)


@tenants_app.command("list")
def tenants_list() -> None:
    async def work(database: Database) -> None:
        async with database.transaction(write=False) as session:
            for tenant in await tenants.list_tenants(session):
                typer.echo(f"{tenant.slug}\t{tenant.id}\t{tenant.name}")

    _run(work)


@keys_app.command("create")
def keys_create(
    scope: Annotated[Scope, typer.Option(help="admin, service, internal, readonly or agent")],
    tenant: TenantOption = DEFAULT_TENANT,
    name: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Create an API key and print its token once."""

    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> None:
        key, token = await tenants.create_key(
            session, ctx, name=name or f"{scope.value} key", scope=scope
        )
        typer.echo(f"created {key.scope} key {key.id} (shown once, store it now):", err=True)
        typer.echo(token)

    _in_tenant(tenant, work)


@keys_app.command("revoke")
def keys_revoke(key_id: str, tenant: TenantOption = DEFAULT_TENANT) -> None:
    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> None:
        key = await tenants.revoke_key(session, ctx, key_id)
        typer.echo(f"revoked {key.id} at {key.revoked_at}")

    _in_tenant(tenant, work)


@keys_app.command("list")
def keys_list(tenant: TenantOption = DEFAULT_TENANT) -> None:
    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> None:
        for key in await tenants.list_keys(session, ctx.tenant_id):
            state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
            typer.echo(f"{key.id}\t{key.scope}\t{state}\t{key.name}")

    _in_tenant(tenant, work)


# --- plans -----------------------------------------------------------------------------


@plans_app.command("validate")
def plans_validate(file: Path) -> None:
    """Check a plans file; print every problem with its path."""
    spec = _load_plans(file)
    typer.echo(f"{file}: ok ({len(spec.features)} features, {len(spec.plans)} plans)")


@plans_app.command("diff")
def plans_diff(file: Path, tenant: TenantOption = DEFAULT_TENANT) -> None:
    """Show what `plans apply` would change."""
    spec = _load_plans(file)

    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> None:
        stored, archived = await catalog_service.stored(session, ctx.tenant_id)
        try:
            typer.echo(catalog_service.diff(stored, archived, spec).render())
        except PlansFileError as error:
            for line in error.errors:
                typer.echo(line, err=True)
            raise typer.Exit(1) from None

    _in_tenant(tenant, work)


@plans_app.command("apply")
def plans_apply(file: Path, tenant: TenantOption = DEFAULT_TENANT) -> None:
    """Store new immutable plan versions for whatever changed."""
    spec = _load_plans(file)

    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> None:
        try:
            changes, revision = await catalog_service.apply(session, ctx, spec)
        except PlansFileError as error:
            for line in error.errors:
                typer.echo(line, err=True)
            raise typer.Exit(1) from None
        typer.echo(changes.render())
        if not changes.empty:
            typer.echo(f"applied: catalog revision {revision}")

    _in_tenant(tenant, work)


# --- grants ----------------------------------------------------------------------------


@grants_app.command("add")
def grants_add(
    customer: Annotated[str, typer.Option()],
    plan: Annotated[str | None, typer.Option()] = None,
    feature: Annotated[str | None, typer.Option()] = None,
    value: Annotated[
        str | None, typer.Option(help="true/false, a number, unlimited, or a,b")
    ] = None,
    duration: Annotated[str | None, typer.Option(help='"30d" or "lifetime"')] = None,
    source: Annotated[str, typer.Option()] = "admin",
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Grant a plan or one feature to a customer (no payment needed)."""
    if (plan is None) == (feature is None):
        _fail("give exactly one of --plan and --feature")

    async def work(session: AsyncSession, ctx: Context, catalog: Catalog) -> None:
        days = claims.parse_duration(duration or "lifetime")
        window = Window(ctx.now, None if days is None else ctx.now + timedelta(days=days))
        target = await customers.ensure(session, ctx, customer)
        claims.check_source(source)
        if plan is not None:
            version = catalog.require_plan(plan)
            grant = await grants.grant_plan(session, ctx, target, version, window, source=source)
        else:
            assert feature is not None
            grant = await grants.grant_feature(
                session, ctx, catalog, target, feature, _cli_value(value), window, source=source
            )
        typer.echo(f"granted {grant.id} to {customer} until {grant.ends_at or 'revoked'}")

    _in_tenant(tenant, work)


def _cli_value(raw: str | None) -> Any:
    if raw is None:
        _fail("--feature needs --value")
        return None
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if raw.isdigit():
        return int(raw)
    if raw == "unlimited":
        return raw
    return [part.strip() for part in raw.split(",") if part.strip()]


@grants_app.command("revoke")
def grants_revoke(
    grant_id: str,
    reason: Annotated[str | None, typer.Option()] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    async def work(session: AsyncSession, ctx: Context, catalog: Catalog) -> None:
        grant = await grants.revoke(session, ctx, catalog, grant_id, reason=reason)
        typer.echo(f"{grant.id}: revoked at {grant.revoked_at or '(had already ended)'}")

    _in_tenant(tenant, work)


# --- subscriptions ---------------------------------------------------------------------


@subs_app.command("activate")
def subscriptions_activate(
    customer: Annotated[str, typer.Option()],
    plan: Annotated[str, typer.Option()],
    period_ends: Annotated[str | None, typer.Option(help="2027-01-31 or an ISO instant")] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    async def work(session: AsyncSession, ctx: Context, catalog: Catalog) -> None:
        sub = await subscriptions.activate(
            session,
            ctx,
            catalog,
            customer,
            plan,
            starts_at=None,
            period_ends_at=_moment(period_ends, end_of_day=True),
            metadata={},
        )
        typer.echo(f"activated {sub.id}: {customer} on {sub.plan}")

    _in_tenant(tenant, work)


@subs_app.command("renew")
def subscriptions_renew(
    subscription_id: str,
    period_ends: Annotated[str, typer.Option(help="2027-01-31 or an ISO instant")],
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    async def work(session: AsyncSession, ctx: Context, catalog: Catalog) -> None:
        ends = _moment(period_ends, end_of_day=True)
        assert ends is not None
        sub = await subscriptions.renew(session, ctx, catalog, subscription_id, period_ends_at=ends)
        typer.echo(f"renewed {sub.id} until {sub.current_period_ends_at}")

    _in_tenant(tenant, work)


@subs_app.command("cancel")
def subscriptions_cancel(
    subscription_id: str,
    at_period_end: Annotated[bool, typer.Option("--at-period-end")] = False,
    reason: Annotated[str | None, typer.Option()] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    async def work(session: AsyncSession, ctx: Context, catalog: Catalog) -> None:
        sub = await subscriptions.cancel(
            session, ctx, catalog, subscription_id, at_period_end=at_period_end, reason=reason
        )
        typer.echo(f"canceled {sub.id}; entitlements end at {sub.ends_at}")

    _in_tenant(tenant, work)


# --- claims ----------------------------------------------------------------------------


@claims_app.command("create")
def claims_create(
    plan: Annotated[str, typer.Option()],
    count: Annotated[int, typer.Option()],
    duration: Annotated[str, typer.Option(help='"365d" or "lifetime"')],
    max_redemptions: Annotated[int, typer.Option()] = 1,
    expires: Annotated[str | None, typer.Option(help="last day to redeem, e.g. 2027-06-30")] = None,
    source: Annotated[str, typer.Option()] = "claim",
    campaign: Annotated[str | None, typer.Option()] = None,
    tier: Annotated[str | None, typer.Option()] = None,
    output: Annotated[Path | None, typer.Option(help="write the CSV here, not to stdout")] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Issue claim codes as CSV. The codes are shown only this once."""

    async def work(session: AsyncSession, ctx: Context, catalog: Catalog) -> str:
        batch, issued = await claims.create_batch(
            session,
            ctx,
            catalog,
            claims.BatchRequest(
                plan=plan,
                count=count,
                duration_days=claims.parse_duration(duration),
                max_redemptions=max_redemptions,
                expires_at=_moment(expires, end_of_day=True),
                source=source,
                metadata=batch_metadata(campaign, tier),
            ),
            secret_key=_settings().secret_key,
        )
        return csv_of(batch, issued)

    text = _in_tenant(tenant, work)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {count} codes to {output}", err=True)


@claims_app.command("revoke")
def claims_revoke(
    batch: Annotated[str | None, typer.Option(help="revoke every code of a batch")] = None,
    code: Annotated[str | None, typer.Option(help="revoke one code")] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    if (batch is None) == (code is None):
        _fail("give exactly one of --batch and --code")

    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> int:
        if batch is not None:
            return await claims.revoke_batch(session, ctx, batch)
        assert code is not None
        return await claims.revoke_code(session, ctx, code=code, secret_key=_settings().secret_key)

    typer.echo(f"revoked {_in_tenant(tenant, work)} code(s)")


# --- audit -----------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(tenant: TenantOption = DEFAULT_TENANT) -> None:
    """Recompute the event log's hash chain; name the first edited, deleted or moved entry."""

    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> audit.Verification:
        return await audit.verify(session, ctx.tenant_id)

    result = _in_tenant(tenant, work)
    typer.echo(result.describe())
    if not result.ok:
        raise typer.Exit(1)
