"""What a subscription charges: its recurring fee for a stretch of a period, and the
prorations of a change. Rated by `billfold.pricing`, the one copy of the pricing logic;
rounded later, once, on the invoice line."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from billfold.catalog.catalog import PlanVersion
from billfold.catalog.prices import PlanPrice
from billfold.invoicing.records import Charge
from billfold.pricing import prorate, rate


class Proration(StrEnum):
    """How a change inside a period is charged."""

    DAY = "day"  # by whole days used (actual days)
    SECOND = "second"  # by seconds used
    NONE = "none"  # nothing: the new price starts with the next period
    FULL = "full"  # the new price in full for this period, no credit for the old


def recurring(
    version: PlanVersion,
    price: PlanPrice,
    quantity: Decimal,
    period: tuple[datetime, datetime],
    start: datetime,
    end: datetime,
    *,
    proration: Proration = Proration.DAY,
    kind: str = "recurring",
    sign: int = 1,
) -> Charge | None:
    """The recurring fee for [start, end) of `period`; None for a price without one."""
    if price.recurring is None:
        return None
    whole = rate(price.recurring, quantity)
    if proration is Proration.FULL or (start, end) == period:
        share = whole
    elif proration is Proration.NONE:
        return None
    else:
        if proration is Proration.SECOND:
            share = prorate(whole, period[0], period[1], start, end, "seconds")
        else:
            share = prorate(whole, period[0], period[1], start, end, "actual_days")
    if (start, end) == period:
        what = f"{version.name} ({_quantity(quantity)})"
    else:
        what = (
            f"{version.name} ({_quantity(quantity)}), {'unused' if sign < 0 else 'part of'} period"
        )
    return Charge(
        kind=kind,
        description=("Credit: " if sign < 0 else "") + what,
        quantity=quantity,
        amount_precise=sign * share,
        price=price.recurring,
        period_start=start,
        period_end=end,
    )


def _quantity(quantity: Decimal) -> str:
    text = format(quantity.normalize(), "f")
    return f"× {text}"
