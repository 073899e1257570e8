"""Period close: when a billed subscription's period ends, rate the period's usage,
renew (or end) the subscription, and make its draft invoice; when a draft's grace ends,
rate its usage again (late events land on it) and finalize it.

One subscription, or one draft, per transaction, each under its row lock: a run that
is killed loses only the one in hand, and a second run (or a second worker) finds the
period already closed. The unique (subscription, period) constraint on invoices is the
backstop.

An invoice made at a period end T holds:
- the usage of [S, T), per usage price, rated through the meters (billed in arrears);
- the minimum commitment's true-up for [S, T);
- the changes' pending prorations and credits;
- the recurring fee of the next period [T, T') (billed in advance), unless the
  subscription ends or is paused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog, PlanVersion
from billfold.catalog.prices import PlanPrice
from billfold.invoicing import pending
from billfold.invoicing import service as invoicing
from billfold.invoicing.records import Charge, Invoice, Invoicing, Numbering
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.db import Record
from billfold.metering import usage
from billfold.money import minor_units, to_minor
from billfold.pricing import rate
from billfold.subscriptions import charges, lifecycle
from billfold.subscriptions import repository as subscription_rows
from billfold.subscriptions.cycle import Cycle
from billfold.subscriptions.service import locked, price_of
from billfold.subscriptions.status import SubscriptionStatus as S

RERATED = ("usage", "minimum")


@dataclass(frozen=True)
class CloseSettings:
    grace: timedelta = timedelta(hours=1)  # a draft waits this long for late usage
    numbering: Numbering = field(default_factory=Numbering)
    invoicing: Invoicing = field(default_factory=Invoicing)  # seller, locale, taxes
    # Past due this long, a subscription is suspended and its entitlements stop.
    suspend_after: timedelta = timedelta(days=14)


@dataclass(frozen=True)
class Closed:
    subscription_id: str
    invoice_id: str | None
    status: S
    finalized: bool = False  # in the same transaction: the grace had ended by `until`


async def close_subscription(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    subscription_id: str,
    until: datetime,
    settings: CloseSettings,
) -> Closed | None:
    """Close the subscription's current period if it ended by `until`; None if there is
    nothing to close (another run did it, or it is not due)."""
    row = await locked(session, ctx.tenant_id, subscription_id)
    start, end = row.current_period_start, row.current_period_ends_at
    if end is None or end > until or (S(row.status) is S.CANCELED and row.currency is None):
        return None
    status = S(row.status)
    if row.currency is None:  # billed outside: only a scheduled cancellation to carry out
        if not row.cancel_at_period_end:
            return None
        await subscription_rows.update_subscription(
            session, row.id, status=S.CANCELED, canceled_at=end, updated_at=ctx.now
        )
        await eventlog.record(
            session,
            ctx,
            "SubscriptionCancelled",
            {
                "subscription_id": row.id,
                "plan": row.plan_key,
                "ends_at": end.isoformat(),
                "at_period_end": True,
            },
            customer_id=row.customer_id,
        )
        return Closed(row.id, None, S.CANCELED)
    version = catalog.versions[row.plan_version_id]
    price = price_of(version, row.currency, row.interval)
    lines: list[Charge] = []
    finalize_now = end + settings.grace <= until  # a late run, or no grace
    rating = rating_of(row, version, price, start, end)
    if rating is not None:
        lines += await arrears(session, catalog, ctx.tenant_id, rating, start, end)
        if not finalize_now:  # what finalization compares to see whether usage came late
            rating["events"] = await _events(session, catalog, ctx.tenant_id, rating, start, end)
    lines += await pending.take(session, row.id)

    ends = status is S.CANCELED or row.cancel_at_period_end
    next_end: datetime | None = None
    next_status = status
    if ends:
        next_status = S.CANCELED
    else:
        if status is S.TRIALING:
            next_status = S.ACTIVE
        row = await lifecycle.apply_scheduled(session, ctx, catalog, row)
        version = catalog.versions[row.plan_version_id]
        next_end, advance = advance_of(row, version, row.quantity, end)
        if advance is not None and next_status is not S.PAUSED:
            lines.append(advance)
    off = charges.discount(row.discount, lines)
    if off is not None:
        lines.append(off)
        await subscription_rows.update_subscription(
            session, row.id, discount=charges.after_use(row.discount)
        )
    lines += _carried_credit(lines, row.currency, keep=not ends)
    invoice_id = None
    if lines:
        invoice_id = await invoicing.create_draft(
            session,
            ctx,
            customer_id=row.customer_id,
            subscription_id=row.id,
            currency=row.currency,
            reason="subscription_end" if ends else "subscription_cycle",
            period_start=start,
            period_end=end,
            charges=lines,
            finalize_at=end + settings.grace,
            rating=rating,
        )
    carried = [line for line in lines if line.kind == "carried"]
    for line in carried:
        await pending.add(
            session,
            ctx,
            row.id,
            Charge(
                kind="credit",
                description="Credit carried from the previous invoice",
                quantity=Decimal(1),
                amount_precise=-line.amount_precise,
            ),
        )
    await subscription_rows.update_subscription(
        session,
        row.id,
        status=next_status,
        current_period_start=end if next_end else start,
        current_period_ends_at=next_end,
        canceled_at=row.canceled_at or (end if ends else None),
        ends_at=row.ends_at or (end if ends else None),
        cancel_at_period_end=False if ends else row.cancel_at_period_end,
        updated_at=ctx.now,
    )
    finalized = False
    if invoice_id is not None and finalize_now:
        # The usage was just read and nothing can land on the draft any more: it is
        # finalized in the same transaction.
        await invoicing.finalize(session, ctx, invoice_id, settings.numbering, settings.invoicing)
        finalized = True
    event: Any = "SubscriptionRenewed"
    data: dict[str, Any] = {"period_start": end.isoformat(), "period_ends_at": _iso(next_end)}
    if ends and status is not S.CANCELED:
        event, data = "SubscriptionCancelled", {"ends_at": end.isoformat(), "at_period_end": True}
    elif status is S.TRIALING and next_status is S.ACTIVE:
        event = "SubscriptionTrialEnded"
    if not (ends and status is S.CANCELED):
        await eventlog.record(
            session,
            ctx,
            event,
            {"subscription_id": row.id, "plan": version.plan_key, "invoice_id": invoice_id, **data},
            customer_id=row.customer_id,
        )
    return Closed(row.id, invoice_id, next_status, finalized)


async def arrears(
    session: AsyncSession,
    catalog: Catalog,
    tenant_id: str,
    rating: Mapping[str, Any],
    start: datetime,
    end: datetime,
) -> list[Charge]:
    """What a period [start, end) owes in arrears: each usage price rated on its meter's
    usage, and the minimum commitment's true-up over the period's recurring fee and
    usage."""
    version = catalog.versions[rating["plan_version_id"]]
    price = price_of(version, rating["currency"], rating["interval"])
    customer = rating["customer"]
    found: list[Charge] = []
    used = Decimal(0)
    for meter_key, meter_price in sorted(price.usage.items()):
        if meter_key not in catalog.meters:
            continue  # archived since: its usage is no longer read
        quantity: Decimal
        amount: Decimal
        if meter_price["model"] == "percentage":
            events = await usage.amounts(
                session, catalog, tenant_id, customer, meter_key, start, end
            )
            quantity, amount = Decimal(sum(events, Decimal(0))), rate(meter_price, events)
        else:
            report = await usage.usage(session, catalog, tenant_id, customer, meter_key, start, end)
            quantity = Decimal(sum((Decimal(b.value or 0) for b in report.buckets), Decimal(0)))
            amount = rate(meter_price, quantity)
        used += amount
        if quantity == 0 and amount == 0:
            continue
        meter = catalog.meters[meter_key]
        found.append(
            Charge(
                kind="usage",
                description=f"{version.name}: {meter.description or meter_key}",
                quantity=quantity,
                amount_precise=amount,
                price=meter_price,
                meter=meter_key,
                period_start=start,
                period_end=end,
            )
        )
    if price.minimum is not None and rating["recurring"] is not None:
        committed = Decimal(rating["recurring"]) + used
        if committed < price.minimum:
            found.append(
                Charge(
                    kind="minimum",
                    description=f"{version.name}: minimum commitment of {price.minimum}",
                    quantity=Decimal(1),
                    amount_precise=price.minimum - committed,
                    price={"model": "flat", "amount": str(price.minimum)},
                    period_start=start,
                    period_end=end,
                )
            )
    return found


async def finalize_draft(
    session: AsyncSession,
    ctx: Context,
    catalog: Catalog,
    invoice_id: str,
    settings: CloseSettings,
) -> Invoice | None:
    """Rate a draft's usage again (what arrived late lands on it), then finalize it;
    None when it is no longer a draft."""
    draft = await invoicing.draft_to_finalize(session, ctx.tenant_id, invoice_id)
    if draft is None:
        return None
    rating = draft.rating
    period = (draft.period_start, draft.period_end)
    if rating and rating["plan_version_id"] in catalog.versions:
        # Events are never deleted: the same count means no late event, nothing to re-rate.
        late = rating.get("events") != await _events(
            session, catalog, ctx.tenant_id, rating, *period
        )
        if late:
            fresh = await arrears(session, catalog, ctx.tenant_id, rating, *period)
            await invoicing.replace_charges(session, ctx, invoice_id, RERATED, fresh)
    return await invoicing.finalize(
        session, ctx, invoice_id, settings.numbering, settings.invoicing
    )


async def _events(
    session: AsyncSession,
    catalog: Catalog,
    tenant_id: str,
    rating: Mapping[str, Any],
    start: datetime,
    end: datetime,
) -> int:
    version = catalog.versions[rating["plan_version_id"]]
    price = price_of(version, rating["currency"], rating["interval"])
    meters = sorted(price.usage)
    return await usage.event_count(
        session, catalog, tenant_id, rating["customer"], meters, start, end
    )


def rating_of(
    row: Record, version: PlanVersion, price: PlanPrice, start: datetime, end: datetime
) -> dict[str, Any] | None:
    """How a period's arrears are rated (`arrears`), or None when it has none: a trial
    bills nothing, and a paused or canceled period bills its usage but no minimum."""
    if S(row.status) is S.TRIALING or not (price.usage or price.minimum is not None):
        return None
    committed = S(row.status) in (S.ACTIVE, S.PAST_DUE)
    recurring = recurring_for(version, price, row, start, end) if committed else None
    return {
        "plan_version_id": version.id,
        "currency": row.currency,
        "interval": row.interval,
        "customer": row.customer_external_id,
        "recurring": str(recurring) if recurring is not None else None,
    }


def advance_of(
    row: Record, version: PlanVersion, quantity: Decimal, end: datetime
) -> tuple[datetime, Charge | None]:
    """The period that starts at `end`, and its recurring fee billed in advance."""
    period = Cycle(row.billing_anchor, row.interval, row.interval_count).period_of(end)
    price = price_of(version, row.currency, row.interval)
    return period[1], charges.recurring(version, price, quantity, period, end, period[1])


def recurring_for(
    version: PlanVersion, price: PlanPrice, row: Record, start: datetime, end: datetime
) -> Decimal:
    """The recurring fee billed (in advance) for [start, end): what the minimum
    commitment counts beside the usage."""
    cycle = Cycle(row.billing_anchor, row.interval, row.interval_count)
    period = cycle.period_of(start) if start >= row.billing_anchor else (start, end)
    charge = charges.recurring(version, price, row.quantity, period, start, end)
    return charge.amount_precise if charge is not None else Decimal(0)


def _carried_credit(lines: list[Charge], currency: str, *, keep: bool) -> list[Charge]:
    """Nothing negative is ever due: when credits outweigh charges, a line brings the
    invoice to zero and the rest is carried to the subscription's next invoice."""
    total = sum((to_minor(line.amount_precise, currency) for line in lines), 0)
    if total >= 0:
        return []
    rest = -Decimal(total).scaleb(-minor_units(currency))
    description = "Credit carried to the next invoice" if keep else "Credit owed to the customer"
    return [
        Charge(kind="carried", description=description, quantity=Decimal(1), amount_precise=rest)
    ]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
