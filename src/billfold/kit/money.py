"""Money: an integer count of minor units and an ISO 4217 currency, never a float.

Prices and quantities stay exact `Decimal`s until a fee is made; then the amount is
rounded once, to minor units, with a rounding mode the caller names.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Final

from billfold.kit.errors import BillfoldError, FieldError
from billfold.kit.invariants import invariant

CURRENCY: Final = re.compile(r"^[A-Z]{3}$")  # an ISO 4217 alphabetic code
MAX_MINOR: Final = 2**63 - 1  # amounts are BIGINT columns


class UnknownCurrency(BillfoldError):
    status = 422
    code = "unknown_currency"
    title = "Not an ISO 4217 currency with minor units"


@functools.cache
def _minor_units_table() -> dict[str, int]:
    """Each active ISO 4217 code and its minor units, from the ISO table itself (the
    `iso4217` package ships it). Codes without minor units (gold, SDR: "N.A.") are left
    out: nothing is billed in them. Imported here: reading ISO's XML takes ~30 ms, which
    every CLI command and worker would pay at start-up otherwise."""
    import iso4217

    return {
        currency.code: currency.exponent
        for currency in iso4217.Currency
        if currency.exponent is not None
    }


def minor_units(currency: str, *, pointer: str = "#/currency") -> int:
    """How many decimal places an amount in `currency` has (ISO 4217's minor units: USD 2,
    JPY 0, BHD 3, CLF 4). ISO's table, not CLDR's display digits, which differ for some
    currencies (IQD: ISO 3, CLDR 0). `UnknownCurrency` for anything else, its error at
    `pointer` (where the caller's input named the currency)."""
    units = _minor_units_table().get(currency)
    if units is None:
        message = f"{currency!r} is not an ISO 4217 currency with minor units"
        raise UnknownCurrency(message, errors=[FieldError(message, pointer=pointer)])
    return units


def round_money(amount: Decimal, currency: str) -> Decimal:
    """`amount` in major units, rounded once, half up, to the currency's minor units:
    `round_money(Decimal("10.005"), "USD") == Decimal("10.01")`. The one rounding an
    invoice line gets; keep the precise amount beside it."""
    invariant(amount.is_finite(), "an amount of money is finite")
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_UP)


def to_minor(amount: Decimal, currency: str) -> int:
    """A rounded amount in major units (`round_money`) as an integer of minor units."""
    rounded = round_money(amount, currency)
    return round_minor(rounded.scaleb(minor_units(currency)), rounding=ROUND_HALF_UP)


def round_minor(amount: Decimal, *, rounding: str) -> int:
    """An exact amount of minor units rounded once to a whole number, with `rounding`
    (one of the `decimal` module's modes, such as `ROUND_HALF_EVEN`). Exact at any size
    (no context precision applies); an amount no BIGINT holds is a bug, not money."""
    invariant(amount.is_finite(), "an amount of money is finite")
    minor = int(amount.to_integral_value(rounding=rounding))
    invariant(-MAX_MINOR <= minor <= MAX_MINOR, "an amount of money fits in 64 bits")
    return minor


@dataclass(frozen=True)
class Money:
    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        invariant(type(self.amount_minor) is int, "minor units are an integer")
        invariant(bool(CURRENCY.match(self.currency)), "a currency is an ISO 4217 code")

    def __add__(self, other: Money) -> Money:
        invariant(other.currency == self.currency, "money of one currency only adds up")
        return Money(self.amount_minor + other.amount_minor, self.currency)
