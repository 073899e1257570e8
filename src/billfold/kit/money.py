"""Money: an integer count of minor units and an ISO 4217 currency, never a float.

Prices and quantities stay exact `Decimal`s until a fee is made; then the amount is
rounded once, to minor units, with a rounding mode the caller names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from billfold.kit.invariants import invariant

CURRENCY: Final = re.compile(r"^[A-Z]{3}$")  # an ISO 4217 alphabetic code
MAX_MINOR: Final = 2**63 - 1  # amounts are BIGINT columns


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
