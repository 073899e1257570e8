"""A subscription's billing cycle: where its periods start and end.

Periods count from an anchor: on `anniversary` billing the subscription's own start, on
`calendar` billing the start of the calendar interval that holds it (the 1st of the
month, January 1st, Monday, midnight; in UTC), so the first period is a part of one and
is prorated. Each boundary is counted from the anchor, never from the boundary before, so
an anchor on the 31st comes back to the 31st after a shorter month
(`billfold.pricing.billing_dates`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

from billfold.pricing.dates import add_months

MAX_PERIODS: Final = 100_000  # a boundary search never walks further than this


class BillingCycle(StrEnum):
    ANNIVERSARY = "anniversary"
    CALENDAR = "calendar"


@dataclass(frozen=True)
class Cycle:
    anchor: datetime
    interval: str  # day, week, month or year
    interval_count: int = 1

    @classmethod
    def starting(
        cls, start: datetime, interval: str, interval_count: int, billing: BillingCycle
    ) -> Cycle:
        """The cycle of a subscription that starts at `start`."""
        start = start.astimezone(UTC)
        if billing is BillingCycle.ANNIVERSARY:
            return cls(start, interval, interval_count)
        midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
        if interval == "week":
            midnight -= timedelta(days=midnight.weekday())
        elif interval == "month":
            midnight = midnight.replace(day=1)
        elif interval == "year":
            midnight = midnight.replace(month=1, day=1)
        return cls(midnight, interval, interval_count)

    def boundary(self, n: int) -> datetime:
        """The anchor moved on by `n` periods."""
        steps = n * self.interval_count
        if self.interval == "day":
            return self.anchor + timedelta(days=steps)
        if self.interval == "week":
            return self.anchor + timedelta(weeks=steps)
        months = steps * (12 if self.interval == "year" else 1)
        day = add_months(self.anchor.date(), months)
        return datetime.combine(day, self.anchor.timetz())

    def period_of(self, instant: datetime) -> tuple[datetime, datetime]:
        """The period [start, end) that holds `instant` (at or after the anchor)."""
        n = self._estimate(instant)
        while n > 0 and self.boundary(n) > instant:
            n -= 1
        while self.boundary(n + 1) <= instant:
            n += 1
            if n > MAX_PERIODS:
                raise ValueError(f"{instant} is more than {MAX_PERIODS} periods away")
        return self.boundary(n), self.boundary(n + 1)

    def next_end(self, period_end: datetime) -> datetime:
        """The end of the period that starts at `period_end`."""
        return self.period_of(period_end)[1]

    def _estimate(self, instant: datetime) -> int:
        span = instant - self.anchor
        days = {"day": 1, "week": 7, "month": 28, "year": 365}[self.interval]
        return max(0, span.days // (days * self.interval_count) - 1)
