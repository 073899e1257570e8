"""Quota policies as a plans file declares them for a metered feature: the meter that
feeds it, how often it resets and from when, and what happens past it.

How usage is drawn from a customer's quota is `billfold.metering.quotas.buckets`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from billfold.kit.periods import Reset


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


@dataclass(frozen=True)
class QuotaPolicy:
    meter: str
    reset: Reset = Reset.MONTH
    anchor: Anchor = Anchor.CALENDAR
    limit: LimitKind = LimitKind.HARD
    overage: bool = False  # overage may be used (and billed) even under enforce
    enforcement: Enforcement | None = None  # None: the deployment's default

    def as_json(self) -> dict[str, Any]:
        return {
            "meter": self.meter,
            "reset": self.reset.value,
            "anchor": self.anchor.value,
            "limit": self.limit.value,
            "overage": self.overage,
            "enforcement": self.enforcement.value if self.enforcement else None,
        }

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
        )

    def enforcement_under(self, default: Enforcement) -> Enforcement:
        return self.enforcement or default
