"""Billing dates and prorations: calendar arithmetic, exact."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, localcontext
from typing import Final, Literal

from billfold.kit.errors import FieldError, InvalidInput

INTERVALS: Final = ("day", "week", "month", "year")
DayCount = Literal["actual_days", "seconds"]
# Prorations divide: a third of 29.00 has no end. They keep this many significant
# digits, far past any minor unit, and are rounded once on the invoice line.
PRECISION: Final = 40


def billing_dates(anchor: date, interval: str, count: int, interval_count: int = 1) -> list[date]:
    """The next `count` billing dates after `anchor`, every `interval_count` intervals.
    Each is counted from the anchor, never from the date before: an anchor on the 29th to
    31st clamps to a shorter month's last day and comes back to its own day after it
    (Jan 31, Feb 28, Mar 31, ...); Feb 29 yearly is Feb 28 outside leap years."""
    if interval not in INTERVALS:
        message = f"the interval is one of {', '.join(INTERVALS)}, not {interval!r}"
        raise InvalidInput(message, errors=[FieldError(message, pointer="#/interval")])
    if interval_count < 1 or count < 0:
        message = "interval_count is at least 1 and count is not negative"
        raise InvalidInput(message, errors=[FieldError(message, pointer="#/interval_count")])
    steps = range(1, count + 1)
    if interval == "day":
        return [anchor + timedelta(days=n * interval_count) for n in steps]
    if interval == "week":
        return [anchor + timedelta(weeks=n * interval_count) for n in steps]
    months = interval_count * (12 if interval == "year" else 1)
    return [add_months(anchor, n * months) for n in steps]


def add_months(day: date, months: int) -> date:
    """`day` moved by `months`, on the same day of the month, or the month's last day
    when it has fewer."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def prorate(
    amount: Decimal,
    period_start: datetime | date,
    period_end: datetime | date,
    start: datetime | date,
    end: datetime | date,
    day_count: DayCount = "actual_days",
) -> Decimal:
    """The exact share of `amount` for `[start, end)` inside the period `[period_start,
    period_end)` (the part outside the period counts for nothing).

    `actual_days` counts whole calendar days (instants are taken by their UTC date, so a
    change during a day counts that day for the new side); `seconds` counts seconds."""
    if day_count not in ("actual_days", "seconds"):
        message = f"day_count is actual_days or seconds, not {day_count!r}"
        raise InvalidInput(message, errors=[FieldError(message, pointer="#/day_count")])
    if day_count == "actual_days":
        bounds = [_day(value) for value in (period_start, period_end, start, end)]
        whole = Decimal((bounds[1] - bounds[0]).days)
        low, high = max(bounds[2], bounds[0]), min(bounds[3], bounds[1])
        part = Decimal(max((high - low).days, 0))
    else:
        instants = [_instant(value) for value in (period_start, period_end, start, end)]
        whole = _seconds(instants[1] - instants[0])
        low_i, high_i = max(instants[2], instants[0]), min(instants[3], instants[1])
        part = max(_seconds(high_i - low_i), Decimal(0))
    if whole <= 0:
        message = "a period ends after it starts"
        raise InvalidInput(message, errors=[FieldError(message, pointer="#/period_end")])
    with localcontext() as context:
        context.prec = PRECISION
        return amount * part / whole


def _day(value: datetime | date) -> date:
    """A date, or an instant's date in UTC."""
    if isinstance(value, datetime):
        return _instant(value).date()
    return value


def _instant(value: datetime | date) -> datetime:
    """An aware instant in UTC; a date is its midnight, UTC."""
    if not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if value.tzinfo is None:
        message = "instants carry a time zone"
        raise InvalidInput(message, errors=[FieldError(message, pointer="#/start")])
    return value.astimezone(UTC)


def _seconds(span: timedelta) -> Decimal:
    """A span in seconds, exactly (to the microsecond), with no float on the way."""
    whole = span.days * 86_400 + span.seconds
    return Decimal(whole) + Decimal(span.microseconds).scaleb(-6)
