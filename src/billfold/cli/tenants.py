"""`billfold tenants ...` and `billfold keys ...`: tenants and their API keys."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.cli.common import DEFAULT_TENANT, TenantOption, in_tenant, run
from billfold.kit.clock import SystemClock
from billfold.kit.context import Context
from billfold.kit.db import Database
from billfold.tenants import service as tenants
from billfold.tenants.scopes import Scope

tenants_app = typer.Typer(help="Tenants (isolated billing namespaces).", no_args_is_help=True)
keys_app = typer.Typer(help="API keys: shown once, stored as hashes.", no_args_is_help=True)


@tenants_app.command("create")
def tenants_create(
    slug: Annotated[str, typer.Argument(help="short unique name, used as --tenant")],
    name: Annotated[str | None, typer.Option(help="display name (default: the slug)")] = None,
) -> None:
    """Create a tenant. `billfold keys create --tenant SLUG` then makes its first key."""

    async def work(database: Database) -> None:
        async with database.transaction() as session:
            created = await tenants.create_tenant(session, slug, name or slug, SystemClock().now())
            typer.echo(f"created tenant {created.slug} ({created.id})")

    run(work)


@tenants_app.command("list")
def tenants_list() -> None:
    """List the tenants: slug, id and name, one a line."""

    async def work(database: Database) -> None:
        async with database.transaction(write=False) as session:
            for tenant in await tenants.list_tenants(session):
                typer.echo(f"{tenant.slug}\t{tenant.id}\t{tenant.name}")

    run(work)


@keys_app.command("create")
def keys_create(
    scope: Annotated[Scope, typer.Option(help="admin, service, internal, readonly or agent")],
    tenant: TenantOption = DEFAULT_TENANT,
    name: Annotated[
        str | None, typer.Option(help="what the key is for (default: its scope)")
    ] = None,
) -> None:
    """Create an API key and print its token once."""

    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> None:
        key, token = await tenants.create_key(
            session, ctx, name=name or f"{scope.value} key", scope=scope
        )
        typer.echo(f"created {key.scope} key {key.id} (shown once, store it now):", err=True)
        typer.echo(token)

    in_tenant(tenant, work)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id, as `keys list` shows it")],
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Revoke an API key: it is refused from now on (within a second in every process)."""

    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> None:
        key = await tenants.revoke_key(session, ctx, key_id)
        typer.echo(f"revoked {key.id} at {key.revoked_at}")

    in_tenant(tenant, work)


@keys_app.command("list")
def keys_list(tenant: TenantOption = DEFAULT_TENANT) -> None:
    """List a tenant's API keys: id, scope, state and name (never the token)."""

    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> None:
        for key in await tenants.list_keys(session, ctx.tenant_id):
            state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
            typer.echo(f"{key.id}\t{key.scope}\t{state}\t{key.name}")

    in_tenant(tenant, work)
