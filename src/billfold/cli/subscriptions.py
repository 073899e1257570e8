"""`billfold subscriptions ...`: activate, renew and cancel."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.cli.common import DEFAULT_TENANT, TenantOption, in_tenant, moment
from billfold.kit.context import Context
from billfold.subscriptions import lifecycle
from billfold.subscriptions import service as subscriptions
from billfold.subscriptions.service import Billing, NewSubscription

app = typer.Typer(help="Activate, renew, cancel and migrate subscriptions.", no_args_is_help=True)
SubscriptionId = Annotated[str, typer.Argument(help="the subscription's id")]


@app.command("activate")
def subscriptions_activate(
    customer: Annotated[str, typer.Option(help="the customer's id in your product")],
    plan: Annotated[str, typer.Option(help="the plan subscribed to")],
    currency: Annotated[
        str | None, typer.Option(help="ISO 4217; default: the plan's first price")
    ] = None,
    interval: Annotated[str | None, typer.Option(help="day, week, month or year")] = None,
    trial_days: Annotated[int | None, typer.Option(help="default: the price's")] = None,
    billing: Annotated[
        Billing | None,
        typer.Option(help="invoice (default for a priced plan) or external"),
    ] = None,
    period_ends: Annotated[
        str | None, typer.Option(help="billing external: 2027-01-31 or an ISO instant")
    ] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Start a subscription; it grants its plan. A priced plan is billed by invoice."""

    async def work(session: AsyncSession, ctx: Context, catalog: Catalog) -> None:
        new = NewSubscription(
            plan=plan,
            billing=billing,
            currency=currency,
            interval=interval,
            trial_days=trial_days,
            period_ends_at=moment(period_ends, end_of_day=True),
        )
        sub = await subscriptions.create(session, ctx, catalog, customer, new)
        typer.echo(f"activated {sub.id}: {customer} on {sub.plan} ({sub.status})")

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
        sub = await lifecycle.cancel(
            session, ctx, catalog, subscription_id, at_period_end=at_period_end, reason=reason
        )
        typer.echo(f"canceled {sub.id}; entitlements end at {sub.ends_at}")

    in_tenant(tenant, work)


@app.command("migrate")
def subscriptions_migrate(
    plan: Annotated[str, typer.Option(help="the plan whose subscriptions move")],
    to_version: Annotated[int, typer.Option(help="the plan version they move to")],
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Move every live subscription of a plan to one of its versions (grandfathered
    subscriptions stay on theirs until this runs)."""

    async def work(session: AsyncSession, ctx: Context, catalog: Catalog) -> None:
        moved = await lifecycle.migrate(session, ctx, catalog, plan, to_version)
        typer.echo(f"moved {len(moved)} subscription(s) of {plan} to v{to_version}")

    in_tenant(tenant, work)
