"""Periods on the UTC calendar: reset periods of quotas, reporting windows, and (later)
billing periods. Pure arithmetic, no clock: every function takes the instant it is about.

A period is half-open, [start, end). Calendar periods start at midnight UTC, on Monday,
on the 1st and on January 1st. Anchored periods repeat from an anchor instant; a monthly
period anchored on the 31st ends on the last day of shorter months and comes back to the
31st when the month has one.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

BEGINNING: Final = datetime.min.replace(tzinfo=UTC)
NEVER: Final = datetime.max.replace(tzinfo=UTC)


class Reset(StrEnum):
    """How often a period starts again."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"
    NEVER = "never"


def add_months(start: datetime, months: int, day: int) -> datetime:
    """`start` moved by whole months onto `day` of the month, or the month's last day."""
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    return start.replace(year=year, month=month, day=min(day, calendar.monthrange(year, month)[1]))


def period(
    reset: Reset, moment: datetime, anchor: datetime | None = None
) -> tuple[datetime, datetime]:
    """The period [start, end) that holds `moment`.

    Without an `anchor`, calendar periods: UTC days, ISO weeks, months and years. With
    one, periods of that length that repeat from the anchor, before it as after it.
    `Reset.NEVER` is one period from the beginning of time to its end."""
    moment = moment.astimezone(UTC)
    if reset is Reset.NEVER:
        return BEGINNING, NEVER
    if anchor is None:
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        if reset is Reset.DAY:
            return day, day + timedelta(days=1)
        if reset is Reset.WEEK:
            start = day - timedelta(days=day.weekday())
            return start, start + timedelta(days=7)
        if reset is Reset.MONTH:
            start = day.replace(day=1)
            return start, add_months(start, 1, 1)
        start = day.replace(month=1, day=1)
        return start, start.replace(year=start.year + 1)
    anchor = anchor.astimezone(UTC)
    if reset in (Reset.DAY, Reset.WEEK):
        length = timedelta(days=1 if reset is Reset.DAY else 7)
        steps = (moment - anchor) // length
        start = anchor + steps * length
        return start, start + length
    months = 1 if reset is Reset.MONTH else 12
    steps = ((moment.year - anchor.year) * 12 + moment.month - anchor.month) // months
    start = add_months(anchor, steps * months, anchor.day)
    if start > moment:
        steps -= 1
        start = add_months(anchor, steps * months, anchor.day)
    return start, add_months(anchor, (steps + 1) * months, anchor.day)
