"""`billfold subscriptions ...`: activate, renew and cancel."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.cli.common import DEFAULT_TENANT, TenantOption, in_tenant, moment
from billfold.kit.context import Context
from billfold.subscriptions import service as subscriptions

app = typer.Typer(help="Activate, renew and cancel subscriptions.", no_args_is_help=True)
SubscriptionId = Annotated[str, typer.Argument(help="the subscription's id")]


@app.command("activate")
def subscriptions_activate(
    customer: Annotated[str, typer.Option(help="the customer's id in your product")],
    plan: Annotated[str, typer.Option(help="the plan subscribed to")],
    period_ends: Annotated[str | None, typer.Option(help="2027-01-31 or an ISO instant")] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Start a subscription (payment is handled outside Billfold); it grants its plan."""

    async def work(session: AsyncSession, ctx: Context, catalog: Catalog) -> None:
        sub = await subscriptions.activate(
            session,
            ctx,
            catalog,
            customer,
            plan,
            starts_at=None,
            period_ends_at=moment(period_ends, end_of_day=True),
            metadata={},
        )
        typer.echo(f"activated {sub.id}: {customer} on {sub.plan}")

    in_tenant(tenant, work)


@app.command("renew")
def subscriptions_renew(
    subscription_id: SubscriptionId,
    period_ends: Annotated[str, typer.Option(help="2027-01-31 or an ISO instant")],
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Extend a subscription to a new period end (after a payment)."""

    async def work(session: AsyncSession, ctx: Context, catalog: Catalog) -> None:
        ends = moment(period_ends, end_of_day=True)
        assert ends is not None
        sub = await subscriptions.renew(session, ctx, catalog, subscription_id, period_ends_at=ends)
        typer.echo(f"renewed {sub.id} until {sub.current_period_ends_at}")

    in_tenant(tenant, work)


@app.command("cancel")
def subscriptions_cancel(
    subscription_id: SubscriptionId,
    at_period_end: Annotated[
        bool, typer.Option("--at-period-end", help="keep it until the paid period ends")
    ] = False,
    reason: Annotated[str | None, typer.Option(help="kept in the event log")] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Cancel a subscription, now or at the end of its period."""

    async def work(session: AsyncSession, ctx: Context, catalog: Catalog) -> None:
        sub = await subscriptions.cancel(
            session, ctx, catalog, subscription_id, at_period_end=at_period_end, reason=reason
        )
        typer.echo(f"canceled {sub.id}; entitlements end at {sub.ends_at}")

    in_tenant(tenant, work)
