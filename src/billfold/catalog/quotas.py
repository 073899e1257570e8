"""Quota policies as a plans file declares them for a metered feature: the meter that
feeds it, how often it resets and from when, and what happens past it.

How usage is drawn from a customer's quota is `billfold.metering.quotas.buckets`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any, Final

from billfold.kit.periods import Reset

# A wallet's unit: an ISO 4217 code (`USD`) or a credit unit (`credits`), as the ledger
# names units (`billfold.ledger.service.CREDIT_UNIT`; a test keeps the two the same).
CREDIT_UNIT: Final = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAX_RATE_DIGITS: Final = 24  # a rate's significant digits
MAX_RATE_PLACES: Final = 12  # ... and decimal places, so that usage x rate stays exact


class Anchor(StrEnum):
    CALENDAR = "calendar"  # periods start at midnight UTC, Monday, the 1st, January 1st
    SUBSCRIPTION = "subscription"  # periods start on the active subscription's start


class LimitKind(StrEnum):
    HARD = "hard"  # enforce refuses what the quota does not cover
    SOFT = "soft"  # always allowed; the overage is recorded and reported


class Enforcement(StrEnum):
    OFF = "off"  # record usage, check nothing
    ADVISORY = "advisory"  # allow, and record, log and count the overage
    ENFORCE = "enforce"  # refuse (402) what a hard quota does not cover


class Rounding(StrEnum):
    """How a wallet-paid overage's cost is rounded, once per consume, to whole minor
    units of the wallet's unit."""

    UP = "up"  # any fraction is a whole minor unit: a stream of tiny consumes is never free
    HALF_UP = "half_up"
    HALF_EVEN = "half_even"

    @property
    def mode(self) -> str:
        """The `decimal` module's rounding mode (costs are never negative)."""
        return {
            Rounding.UP: ROUND_CEILING,
            Rounding.HALF_UP: ROUND_HALF_UP,
            Rounding.HALF_EVEN: ROUND_HALF_EVEN,
        }[self]


@dataclass(frozen=True)
class WalletOverage:
    """`wallet:` of a metered feature: what no quota bucket covers is paid from the
    customer's wallet in `unit`, at `rate` minor units of it per unit of usage (a credit
    unit's minor unit is one credit). For AI tokens paid in the `ai:` section's credit
    unit, a model's own `credits` rate replaces `rate` (`billfold.catalog.ai`)."""

    unit: str
    rate: Decimal
    rounding: Rounding = Rounding.UP

    def as_json(self) -> dict[str, Any]:
        return {"unit": self.unit, "rate": str(self.rate), "rounding": self.rounding.value}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> WalletOverage:
        return cls(
            unit=raw["unit"],
            rate=Decimal(raw["rate"]),
            rounding=Rounding(raw.get("rounding", Rounding.UP.value)),
        )


@dataclass(frozen=True)
class QuotaPolicy:
    meter: str
    reset: Reset = Reset.MONTH
    anchor: Anchor = Anchor.CALENDAR
    limit: LimitKind = LimitKind.HARD
    overage: bool = False  # overage may be used (and billed) even under enforce
    enforcement: Enforcement | None = None  # None: the deployment's default
    wallet: WalletOverage | None = None  # overage is paid from the customer's wallet

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "meter": self.meter,
            "reset": self.reset.value,
            "anchor": self.anchor.value,
            "limit": self.limit.value,
            "overage": self.overage,
            "enforcement": self.enforcement.value if self.enforcement else None,
        }
        if self.wallet is not None:  # absent, not null: catalogs stored before it match
            body["wallet"] = self.wallet.as_json()
        return body

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> QuotaPolicy:
        enforcement = raw.get("enforcement")
        return cls(
            meter=raw["meter"],
            reset=Reset(raw.get("reset", "month")),
            anchor=Anchor(raw.get("anchor", "calendar")),
            limit=LimitKind(raw.get("limit", "hard")),
            overage=bool(raw.get("overage", False)),
            enforcement=Enforcement(enforcement) if enforcement else None,
            wallet=WalletOverage.from_json(raw["wallet"]) if raw.get("wallet") else None,
        )

    @property
    def pays_in_full(self) -> bool:
        """Under `enforce`, the wallet must pay all of an overage's cost or the consume is
        refused: a hard limit that allows no unpaid overage. Otherwise it pays what it
        holds and the rest stays overage, recorded as before."""
        return self.limit is LimitKind.HARD and not self.overage

    def enforcement_under(self, default: Enforcement) -> Enforcement:
        return self.enforcement or default
