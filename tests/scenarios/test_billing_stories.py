"""Billing stories: customers on test clocks, moved across periods, their invoices asserted
line by line in minor units (USD cents). Each story reads as what happens to someone."""

from __future__ import annotations

from decimal import Decimal

import pytest
import yaml

from tests.conftest import PLANS, Harness
from tests.scenarios.story import Story

pytestmark = pytest.mark.anyio


async def test_ada_joins_pro_on_january_31_of_a_leap_year(harness: Harness) -> None:
    """Her anniversary falls on the 31st: short months bill on their last day, and the
    31st comes back in March."""
    story = Story(harness)
    await story.begin("2028-01-31T09:00:00Z", "ada")
    await story.subscribe("ada", plan="pro")
    await story.advance("2028-05-31T12:00:00Z")
    assert await story.period_ends("ada") == [
        "2028-01-31",  # the first month, billed ahead when she joins
        "2028-02-29",
        "2028-03-31",
        "2028-04-30",
        "2028-05-31",
    ]
    for index in range(5):
        assert await story.lines("ada", index) == [("recurring", 2900)]


async def test_a_yearly_plan_started_on_february_29(harness: Harness) -> None:
    """It renews on February 28 while there is no 29th, and on the 29th again in 2032."""
    story = Story(harness)
    await story.begin("2028-02-29T00:00:00Z", "leo")
    await story.subscribe("leo", plan="studio", interval="year", trial_days=0)
    await story.advance("2032-03-01T00:00:00Z")
    assert await story.period_ends("leo") == [
        "2028-02-29",
        "2029-02-28",
        "2030-02-28",
        "2031-02-28",
        "2032-02-29",
    ]
    assert await story.lines("leo") == [("recurring", 99000)]


async def test_bea_upgrades_in_the_middle_of_a_leap_february(harness: Harness) -> None:
    """Calendar billing from February 1; on the 15th she moves to Studio. The 15 days
    left of 29 are credited at Pro's price and charged at Studio's on March's invoice."""
    story = Story(harness)
    await story.begin("2028-02-01T00:00:00Z", "bea")
    await story.subscribe("bea", plan="pro", billing_cycle="calendar")
    await story.advance("2028-02-15T00:00:00Z")
    changed = await story.act("bea", "change", {"plan": "studio"})
    assert changed["plan"] == "studio"
    await story.advance("2028-03-01T02:00:00Z")
    # -29.00 x 15/29 = -15.00; +99.00 x 15/29 = 51.2068...; then March at Studio's price.
    assert await story.lines("bea") == [
        ("proration", -1500),
        ("proration", 5121),
        ("recurring", 9900),
    ]


async def test_cy_downgrades_and_keeps_studio_until_the_period_ends(harness: Harness) -> None:
    story = Story(harness)
    await story.begin("2026-03-10T00:00:00Z", "cy")
    await story.subscribe("cy", plan="studio", trial_days=0)
    await story.advance("2026-03-20T00:00:00Z")
    await story.act("cy", "change", {"plan": "pro"})
    assert (await story.subscription("cy"))["plan"] == "studio"
    await story.advance("2026-04-10T02:00:00Z")
    assert (await story.subscription("cy"))["plan"] == "pro"
    assert await story.lines("cy") == [("recurring", 2900)]


async def test_dee_cancels_at_once_with_a_prorated_credit(harness: Harness) -> None:
    """Ten days into a 30-day April she leaves; the 20 unused days (19.33) are owed back.
    Her final invoice never asks for a negative amount: the credit is carried."""
    story = Story(harness)
    await story.begin("2026-04-01T00:00:00Z", "dee")
    await story.subscribe("dee", plan="pro")
    await story.advance("2026-04-11T00:00:00Z")
    canceled = await story.act("dee", "cancel", {"prorate_credit": True, "reason": "moving"})
    assert (canceled["status"], canceled["ends_at"]) == ("canceled", "2026-04-11T00:00:00Z")
    await story.advance("2026-04-12T00:00:00Z")
    final = (await story.invoices("dee"))[-1]
    assert final["reason"] == "subscription_end"
    assert [(line["kind"], line["amount_minor"]) for line in final["lines"]] == [
        ("proration", -1933),
        ("carried", 1933),
    ]
    assert (final["total_minor"], final["status"]) == (0, "paid")


async def test_eve_converts_after_her_trial_and_fay_lets_hers_lapse(harness: Harness) -> None:
    story = Story(harness)
    await story.begin("2026-07-01T00:00:00Z", "eve", "fay")
    await story.subscribe("eve", plan="studio")
    await story.subscribe("fay", plan="studio", cancel_at_period_end=True)
    await story.advance("2026-08-01T00:00:00Z")
    assert (await story.subscription("eve"))["status"] == "active"
    assert await story.period_ends("eve") == ["2026-07-15"]  # billed from the trial's end
    assert await story.lines("eve") == [("recurring", 9900)]
    assert (await story.subscription("fay"))["status"] == "canceled"
    assert await story.invoices("fay") == []


async def test_gus_pauses_for_half_of_may(harness: Harness) -> None:
    story = Story(harness)
    await story.begin("2026-05-01T00:00:00Z", "gus")
    await story.subscribe("gus", plan="pro")
    await story.advance("2026-05-16T00:00:00Z")
    await story.act("gus", "pause")
    await story.advance("2026-06-01T02:00:00Z")
    # 16 of May's 31 days credited; nothing recurring while paused.
    assert await story.lines("gus") == [("proration", -1497), ("carried", 1497)]
    await story.act("gus", "resume")  # on June 1: the whole of June is charged
    await story.advance("2026-07-01T02:00:00Z")
    assert await story.lines("gus") == [
        ("credit", -1497),
        ("proration", 2900),
        ("recurring", 2900),
    ]


async def test_ivy_pays_for_ai_tokens_past_the_included_hundred_thousand(
    harness: Harness,
) -> None:
    """1,100,000 tokens in a month: 100,000 included, 900,000 at 2.00 per 100,000 and
    100,000 at 1.50."""
    story = Story(harness)
    await story.begin("2026-09-01T00:00:00Z", "ivy")
    await story.subscribe("ivy", plan="pro")
    await story.use("ivy", "2026-09-10T12:00:00Z", tokens=100_000, count=11)
    await story.advance("2026-10-01T02:00:00Z")
    assert await story.lines("ivy") == [("usage", 1950), ("recurring", 2900)]
    usage = (await story.invoices("ivy"))[-1]["lines"][0]
    assert (usage["meter"], usage["quantity"]) == ("ai_tokens", "1100000")


async def test_hal_commits_to_a_minimum(harness: Harness) -> None:
    """Team: 10.00 a seat, two seats, AI tokens at 0.01 per thousand, at least 50.00 a
    month. A quiet month is topped up to the minimum; a busy one is not."""
    document = yaml.safe_load(PLANS.read_text())
    document["plans"]["team"] = {
        "name": "Team",
        "features": {"spaces.max": 100},
        "prices": [
            {
                "currency": "USD",
                "interval": "month",
                "recurring": {"model": "per_unit", "unit_amount": "10.00"},
                "usage": {"ai_tokens": {"model": "per_unit", "unit_amount": "0.00001"}},
                "minimum": "50.00",
            }
        ],
    }
    await harness.apply_plans(yaml.safe_dump(document, sort_keys=False))
    story = Story(harness)
    await story.begin("2026-01-01T00:00:00Z", "hal")
    await story.subscribe("hal", plan="team", quantity=str(Decimal(2)))
    await story.use("hal", "2026-01-20T00:00:00Z", tokens=500_000)  # 5.00
    await story.advance("2026-02-01T02:00:00Z")
    assert await story.lines("hal") == [("usage", 500), ("minimum", 2500), ("recurring", 2000)]
    await story.use("hal", "2026-02-20T00:00:00Z", tokens=4_000_000)  # 40.00
    await story.advance("2026-03-01T02:00:00Z")
    assert await story.lines("hal") == [("usage", 4000), ("recurring", 2000)]


async def test_jo_launches_with_twenty_percent_off_for_three_months(harness: Harness) -> None:
    story = Story(harness)
    await story.begin("2026-01-01T00:00:00Z", "jo", "kim")
    await story.subscribe("jo", plan="pro", coupon="LAUNCH20")
    await story.subscribe("kim", plan="pro", coupon="WELCOME5")
    await story.advance("2026-05-01T02:00:00Z")
    assert [await story.lines("jo", n) for n in range(5)] == [
        [("recurring", 2900), ("discount", -580)],  # January, billed ahead
        [("recurring", 2900), ("discount", -580)],
        [("recurring", 2900), ("discount", -580)],
        [("recurring", 2900)],  # three periods, then the full price
        [("recurring", 2900)],
    ]
    assert (await story.subscription("jo"))["discount"] is None
    assert await story.lines("kim", 0) == [("recurring", 2900), ("discount", -500)]
    assert await story.lines("kim", 1) == [("recurring", 2900)]
    assert (await story.subscription("kim"))["status"] == "suspended"  # four months unpaid
    refused = await harness.post(
        f"/v1/subscriptions/{story.subscriptions['kim']}/discount", {"coupon": "FRIENDS10"}
    )
    assert (refused.status_code, refused.json()["current_status"]) == (409, "suspended")
    await story.pay("kim")
    await story.advance("2026-05-01T03:00:00Z")  # the next run sees it paid: active again
    friends = await story.act("kim", "discount", {"coupon": "FRIENDS10"})
    assert friends["discount"]["code"] == "FRIENDS10"
    await story.advance("2026-07-01T02:00:00Z")
    assert await story.lines("kim") == [("recurring", 2900), ("discount", -290)]  # forever
