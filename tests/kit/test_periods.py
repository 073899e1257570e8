"""Period arithmetic: calendar and anchored periods hold their instant, follow one
another without a gap, and start where the calendar or the anchor says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billfold.kit.periods import BEGINNING, NEVER, Reset, add_months, period

RESETS = [Reset.DAY, Reset.WEEK, Reset.MONTH, Reset.YEAR]
instants = st.datetimes(
    min_value=datetime(1971, 1, 1), max_value=datetime(2199, 12, 31), timezones=st.just(UTC)
)
anchors = st.none() | instants


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@given(reset=st.sampled_from(RESETS), moment=instants, anchor=anchors)
def test_a_period_holds_its_instant_and_the_next_starts_where_it_ends(
    reset: Reset, moment: datetime, anchor: datetime | None
) -> None:
    start, end = period(reset, moment, anchor)
    assert start <= moment < end
    assert period(reset, end, anchor)[0] == end  # no gap and no overlap
    assert period(reset, start, anchor) == (start, end)  # its start is inside it


@given(reset=st.sampled_from(RESETS), moment=instants)
def test_calendar_periods_start_at_midnight_on_the_calendar(reset: Reset, moment: datetime) -> None:
    start, end = period(reset, moment)
    assert (start.hour, start.minute, start.second, start.microsecond) == (0, 0, 0, 0)
    if reset is Reset.DAY:
        assert end - start == timedelta(days=1)
    elif reset is Reset.WEEK:
        assert (start.weekday(), end - start) == (0, timedelta(days=7))  # Mondays
    elif reset is Reset.MONTH:
        assert (start.day, end.day, start.month % 12 + 1) == (1, 1, end.month)
    else:
        assert (start.month, start.day, end.year) == (1, 1, start.year + 1)


@given(moment=instants, anchor=instants)
def test_a_monthly_period_starts_on_the_anchors_day_or_the_months_last(
    moment: datetime, anchor: datetime
) -> None:
    start, _end = period(Reset.MONTH, moment, anchor)
    assert start.time() == anchor.time()
    next_month = add_months(start.replace(day=1), 1, 1)
    last_day = (next_month - timedelta(days=1)).day
    assert start.day == min(anchor.day, last_day)


def test_an_anchor_on_the_31st_ends_on_shorter_months_last_day_and_comes_back() -> None:
    anchor = at("2026-01-31T09:30:00")
    assert period(Reset.MONTH, at("2026-02-15T00:00:00"), anchor) == (
        at("2026-01-31T09:30:00"),
        at("2026-02-28T09:30:00"),
    )
    assert period(Reset.MONTH, at("2026-03-01T00:00:00"), anchor) == (
        at("2026-02-28T09:30:00"),
        at("2026-03-31T09:30:00"),
    )
    assert period(Reset.YEAR, at("2028-03-01T00:00:00"), at("2024-02-29T00:00:00")) == (
        at("2028-02-29T00:00:00"),  # a leap day anchor keeps its day in leap years
        at("2029-02-28T00:00:00"),
    )


def test_an_anchored_period_can_lie_before_its_anchor() -> None:
    anchor = at("2026-06-10T12:00:00")
    assert period(Reset.WEEK, at("2026-06-01T00:00:00"), anchor) == (
        at("2026-05-27T12:00:00"),
        at("2026-06-03T12:00:00"),
    )


@pytest.mark.parametrize("anchor", [None, at("2026-01-15T00:00:00")])
def test_never_is_one_period_for_all_time(anchor: datetime | None) -> None:
    assert period(Reset.NEVER, at("2026-06-01T12:00:00"), anchor) == (BEGINNING, NEVER)


def test_instants_in_other_zones_are_taken_in_utc() -> None:
    from datetime import timezone

    tokyo = datetime(2026, 7, 1, 5, 0, tzinfo=timezone(timedelta(hours=9)))  # June 30, 20:00Z
    assert period(Reset.MONTH, tokyo) == (at("2026-06-01T00:00:00"), at("2026-07-01T00:00:00"))
