"""What a subscription charges: its recurring fee for a stretch of a period, and the
prorations of a change. Rated by `billfold.pricing`, the one copy of the pricing logic;
rounded later, once, on the invoice line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from billfold.catalog.catalog import PlanVersion
from billfold.catalog.coupons import Coupon
from billfold.catalog.prices import PlanPrice
from billfold.invoicing.records import Charge
from billfold.kit.errors import FieldError, InvalidInput, NotFound
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


# What a discount takes its share of: the invoice's charges, not its credits.
DISCOUNTED: Final = ("recurring", "usage", "minimum", "proration")


class CouponNotFound(NotFound):
    code = "coupon_not_found"


class CouponCurrencyMismatch(InvalidInput):
    code = "coupon_currency_mismatch"
    title = "The coupon takes an amount off in another currency"


def discount_of(coupon: Coupon, currency: str | None) -> dict[str, Any]:
    """A coupon as a subscription keeps it: as it is now, with its periods to run."""
    if coupon.amount_off is not None and coupon.currency != currency:
        raise CouponCurrencyMismatch(
            f"coupon {coupon.code} takes {coupon.amount_off} {coupon.currency} off; the "
            f"subscription is billed in {currency}",
            errors=[FieldError(f"a coupon in {currency}", pointer="#/coupon")],
        )
    return {"code": coupon.code, **coupon.as_json(), "periods_left": coupon.periods}


def discount(held: Mapping[str, Any] | None, lines: Sequence[Charge]) -> Charge | None:
    """The discount line of an invoice of `lines`: the coupon's percentage of the
    charges, or its amount (never more than the charges); None for none."""
    if not held:
        return None
    base = sum(
        (c.amount_precise for c in lines if c.kind in DISCOUNTED and c.amount_precise > 0),
        Decimal(0),
    )
    if base <= 0:
        return None
    if held.get("percent_off") is not None:
        off = base * Decimal(held["percent_off"]) / 100
        what = f"{held['percent_off']}% off"
    else:
        off = min(Decimal(held["amount_off"]), base)
        what = f"{held['amount_off']} {held['currency']} off"
    return Charge(
        kind="discount",
        description=f"Discount {held['code']} ({what})",
        quantity=Decimal(1),
        amount_precise=-off,
    )


def after_use(held: Mapping[str, Any]) -> dict[str, Any] | None:
    """The discount once it has been applied to an invoice: gone after `once`, one period
    fewer when `repeating`, the same `forever`."""
    if held["duration"] == "once":
        return None
    if held["duration"] == "repeating":
        left = int(held["periods_left"]) - 1
        return {**held, "periods_left": left} if left > 0 else None
    return dict(held)
