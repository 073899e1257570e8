"""Quota buckets: usage is drawn from the bucket that ends first, nothing is lost or
made up, and where a customer stands adds up. Pure arithmetic, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from billfold.catalog.features import UNLIMITED, Feature, FeatureType
from billfold.catalog.quotas import Anchor, QuotaPolicy
from billfold.grants.resolution import Contribution, Entitlement
from billfold.kit.periods import NEVER, Reset
from billfold.metering.quotas.buckets import (
    Bucket,
    buckets,
    draw,
    overage_key,
    prune,
    standing,
)

T0 = datetime(2026, 6, 1, tzinfo=UTC)
amounts = st.decimals(min_value=0, max_value=10**6, places=2, allow_nan=False)


@st.composite
def live_buckets(draw_: st.DrawFn) -> list[Bucket]:
    """The period's allowance and up to four top-ups, in the order usage is drawn."""
    found = [Bucket("period:2026-06-01", draw_(amounts), T0, T0 + timedelta(days=30), 0, None)]
    for index in range(draw_(st.integers(0, 4))):
        days = draw_(st.integers(1, 60))
        amount = draw_(st.none() | amounts)  # None: unlimited
        found.append(
            Bucket(f"grant:g{index}", amount, T0, T0 + timedelta(days=days), index % 3, None)
        )
    return sorted(found, key=Bucket.order)


@st.composite
def drawn_from(draw_: st.DrawFn, live: list[Bucket]) -> dict[str, Decimal]:
    return {
        bucket.key: draw_(st.decimals(min_value=0, max_value=bucket.amount, places=2))
        for bucket in live
        if bucket.amount is not None and draw_(st.booleans())
    }


@given(data=st.data(), amount=amounts)
def test_a_draw_takes_exactly_the_amount_from_the_buckets_in_order(
    data: st.DataObject, amount: Decimal
) -> None:
    live = data.draw(live_buckets())
    before = data.draw(drawn_from(live))
    after, overage = draw(live, before, amount)
    taken = {b.key: after.get(b.key, Decimal(0)) - before.get(b.key, Decimal(0)) for b in live}
    period = next(b for b in live if b.key.startswith("period:"))
    assert sum(taken.values()) + overage == amount  # nothing lost, nothing made up
    assert after.get(overage_key(period), Decimal(0)) == overage
    for index, bucket in enumerate(live):
        assert taken[bucket.key] >= 0
        if bucket.amount is not None:
            assert after.get(bucket.key, Decimal(0)) <= bucket.amount  # never overfilled
        if any(taken[later.key] > 0 for later in live[index + 1 :]):
            # a later bucket is drawn only once this one is full
            assert bucket.amount is not None
            assert after.get(bucket.key, Decimal(0)) == bucket.amount
    if any(b.amount is None for b in live):
        assert overage == 0  # an unlimited bucket covers everything


@given(data=st.data(), amount=amounts)
def test_where_a_customer_stands_adds_up(data: st.DataObject, amount: Decimal) -> None:
    live = data.draw(live_buckets())
    after, overage = draw(live, data.draw(drawn_from(live)), amount)
    found = standing(live, after)
    assert found.overage == overage
    if found.limit is None:
        assert found.remaining is None
    else:
        assert found.remaining is not None
        assert found.used - found.overage + found.remaining == found.limit
        assert found.remaining == 0 or found.overage == 0  # overage only once all is used


def test_buckets_are_drawn_ending_first_then_by_priority() -> None:
    def contribution(
        grant_id: str, value: int, ends: datetime | None, priority: int
    ) -> Contribution:
        return Contribution(grant_id, "admin", None, None, value, priority, T0, ends)

    feature = Feature("ai.tokens", FeatureType.METERED)
    plan = Contribution("grant_plan", "plan", "pro", 1, 1000, 0, T0, None)
    entitlement = Entitlement(
        feature,
        1000,
        (
            plan,
            contribution("late", 10, T0 + timedelta(days=90), 5),
            contribution("soon_low", 10, T0 + timedelta(days=3), 0),
            contribution("soon_high", 10, T0 + timedelta(days=3), 9),
            contribution("forever", 10, None, 0),
        ),
        plan,
    )
    policy = QuotaPolicy(meter="tokens", reset=Reset.MONTH, anchor=Anchor.CALENDAR)
    order = [b.key for b in buckets(entitlement, policy, T0 + timedelta(hours=1), None)]
    assert order == [
        "grant:soon_high",  # ends first; of two that end together, the higher priority
        "grant:soon_low",
        "period:2026-06-01T00:00:00+00:00",  # the month's allowance ends on July 1st
        "grant:late",
        "grant:forever",  # a bucket that never ends comes last
    ]
    unlimited = Entitlement(feature, UNLIMITED, (), None)
    (allowance,) = buckets(unlimited, policy, T0, None)
    assert (allowance.amount, allowance.ends_at) == (None, datetime(2026, 7, 1, tzinfo=UTC))


def test_pruning_forgets_only_buckets_that_ended_before_the_late_window() -> None:
    totals = {"period:may": Decimal(5), "period:june": Decimal(7), "grant:x": Decimal(1)}
    ends = {"period:may": T0, "period:june": T0 + timedelta(days=30), "grant:x": NEVER}
    kept, kept_ends = prune(totals, ends, cutoff=T0 + timedelta(seconds=1))
    assert kept == {"period:june": Decimal(7), "grant:x": Decimal(1)}
    assert set(kept_ends) == set(kept)
    assert prune(totals, ends, cutoff=T0)[0] == totals  # one that ends at the cutoff stays
