"""`billfold grants ...`: grant and revoke plans or single features."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.claims import service as claims
from billfold.cli.common import DEFAULT_TENANT, TenantOption, fail, in_tenant
from billfold.customers import service as customers
from billfold.grants import service as grants
from billfold.grants.service import Window
from billfold.kit.context import Context

app = typer.Typer(help="Grant and revoke plans or single features.", no_args_is_help=True)


@app.command("add")
def grants_add(
    customer: Annotated[str, typer.Option(help="the customer's id in your product")],
    plan: Annotated[str | None, typer.Option(help="grant this plan")] = None,
    feature: Annotated[
        str | None, typer.Option(help="grant this one feature (with --value)")
    ] = None,
    value: Annotated[
        str | None, typer.Option(help="true/false, a number, unlimited, or a,b")
    ] = None,
    duration: Annotated[str | None, typer.Option(help='"30d" or "lifetime"')] = None,
    source: Annotated[str, typer.Option(help="why it was granted, kept on the grant")] = "admin",
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Grant a plan or one feature to a customer (no payment needed)."""
    if (plan is None) == (feature is None):
        fail("give exactly one of --plan and --feature")

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

    in_tenant(tenant, work)


def _cli_value(raw: str | None) -> Any:
    if raw is None:
        fail("--feature needs --value")
        return None
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if raw.isdigit():
        return int(raw)
    if raw == "unlimited":
        return raw
    return [part.strip() for part in raw.split(",") if part.strip()]


@app.command("revoke")
def grants_revoke(
    grant_id: Annotated[str, typer.Argument(help="the grant's id")],
    reason: Annotated[str | None, typer.Option(help="kept in the event log")] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Revoke a grant now: what it gave ends at once."""

    async def work(session: AsyncSession, ctx: Context, catalog: Catalog) -> None:
        grant = await grants.revoke(session, ctx, catalog, grant_id, reason=reason)
        typer.echo(f"{grant.id}: revoked at {grant.revoked_at or '(had already ended)'}")

    in_tenant(tenant, work)
