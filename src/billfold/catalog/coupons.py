"""The plans file's `coupons:`: discounts a subscription can carry.

    coupons:
      LAUNCH20: {percent_off: "20", duration: repeating, periods: 3}
      WELCOME5: {amount_off: "5.00", currency: USD, duration: once}
      FRIENDS:  {percent_off: "10", duration: forever}

A coupon takes a percentage, or an amount in one currency, off each invoice it applies
to: `once` (the next invoice), `repeating` (the next `periods` invoices) or `forever`.
A subscription keeps the coupon as it was when applied, so editing a coupon never
changes a discount already given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from billfold.kit.errors import BillfoldError
from billfold.money import minor_units
from billfold.pricing.models import amount

COUPON_CODE: Final = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,39}$")
DURATIONS: Final = ("once", "repeating", "forever")
KEYS: Final = ("percent_off", "amount_off", "currency", "duration", "periods", "description")
MAX_PERIODS: Final = 120
Found = list[tuple[tuple[str, ...], str]]


@dataclass(frozen=True)
class Coupon:
    code: str
    duration: str  # once, repeating or forever
    percent_off: Decimal | None = None  # 0 < p <= 100
    amount_off: Decimal | None = None  # major units of `currency`
    currency: str | None = None
    periods: int | None = None  # repeating: how many invoices
    description: str | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"duration": self.duration}
        if self.percent_off is not None:
            body["percent_off"] = str(self.percent_off)
        if self.amount_off is not None:
            body["amount_off"] = str(self.amount_off)
            body["currency"] = self.currency
        if self.periods is not None:
            body["periods"] = self.periods
        if self.description is not None:
            body["description"] = self.description
        return body

    @classmethod
    def from_json(cls, code: str, raw: Mapping[str, Any]) -> Coupon:
        return cls(
            code=code,
            duration=raw["duration"],
            percent_off=Decimal(raw["percent_off"]) if "percent_off" in raw else None,
            amount_off=Decimal(raw["amount_off"]) if "amount_off" in raw else None,
            currency=raw.get("currency"),
            periods=raw.get("periods"),
            description=raw.get("description"),
        )


def read_coupons(raw: Any) -> tuple[dict[str, Coupon], Found]:
    """The `coupons:` section read into `Coupon`s, and every problem with its path."""
    if raw is None:
        return {}, []
    if not isinstance(raw, Mapping):
        return {}, [(("coupons",), "expected a mapping of coupon codes to coupons")]
    coupons: dict[str, Coupon] = {}
    problems: Found = []
    for code, body in raw.items():
        path = ("coupons", str(code))
        if not isinstance(code, str) or not COUPON_CODE.match(code):
            problems.append((path, "coupon codes are capitals, digits, - and _, e.g. LAUNCH20"))
            continue
        found, coupon = _coupon(code, body, path)
        problems += found
        if coupon is not None:
            coupons[code] = coupon
    return coupons, problems


def _coupon(code: str, body: Any, path: tuple[str, ...]) -> tuple[Found, Coupon | None]:
    if not isinstance(body, Mapping):
        return [(path, "expected a mapping with percent_off or amount_off, and duration")], None
    problems: Found = [
        ((*path, str(key)), f"unknown key (expected one of {', '.join(KEYS)})")
        for key in body
        if key not in KEYS
    ]
    percent = _amount(body, "percent_off", path, problems)
    off = _amount(body, "amount_off", path, problems)
    if (percent is None) == (off is None) and not problems:
        problems.append((path, "a coupon takes either percent_off or amount_off"))
    if percent is not None and not Decimal(0) < percent <= 100:
        problems.append(((*path, "percent_off"), "a percentage above 0, at most 100"))
    if off is not None and off <= 0:
        problems.append(((*path, "amount_off"), "an amount above 0"))
    currency = body.get("currency")
    if off is not None:
        try:
            minor_units(currency if isinstance(currency, str) else "")
        except BillfoldError:
            problems.append(((*path, "currency"), "an amount off needs its ISO 4217 currency"))
    elif currency is not None:
        problems.append(((*path, "currency"), "only an amount_off has a currency"))
    duration = body.get("duration")
    if duration not in DURATIONS:
        problems.append(((*path, "duration"), f"expected one of {', '.join(DURATIONS)}"))
    periods = body.get("periods")
    if duration == "repeating":
        if type(periods) is not int or not 1 <= periods <= MAX_PERIODS:
            message = f"a repeating coupon runs a whole number of periods, 1 to {MAX_PERIODS}"
            problems.append(((*path, "periods"), message))
    elif periods is not None:
        problems.append(((*path, "periods"), "only a repeating coupon has periods"))
    description = body.get("description")
    if description is not None and (not isinstance(description, str) or len(description) > 500):
        problems.append(((*path, "description"), "expected text of at most 500 characters"))
    if problems:
        return problems, None
    return [], Coupon(
        code=code,
        duration=str(duration),
        percent_off=percent,
        amount_off=off,
        currency=currency if off is not None else None,
        periods=periods if duration == "repeating" else None,
        description=description,
    )


def _amount(
    body: Mapping[str, Any], key: str, path: tuple[str, ...], problems: Found
) -> Decimal | None:
    if body.get(key) is None:
        return None
    try:
        return amount(body[key], "#")
    except BillfoldError as error:
        detail = error.errors[0].detail if error.errors else str(error)
        problems.append(((*path, key), detail))
        return None
