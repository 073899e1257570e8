"""Quotas: how much of a metered feature a customer may use, and in which order. Pure.

A metered feature gives each customer buckets of quota:

- the **allowance** of their plan (the largest plan value among their live plan grants,
  the default plan included), renewed every reset period;
- one **top-up** per live feature grant (for example +50,000 tokens for 30 days from a
  claim code), available over the grant's own window and never renewed.

Usage is drawn from the bucket that expires first. Ties go to the higher priority, then
to the bucket that started first, then to its key. A bucket that never expires comes
last. What no bucket covers is overage. See docs/quotas.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from billfold.catalog.features import Unlimited
from billfold.catalog.quotas import Anchor, QuotaPolicy
from billfold.grants.resolution import Contribution, Entitlement
from billfold.kit.periods import BEGINNING, NEVER, period

OVERAGE = "overage"


@dataclass(frozen=True)
class Bucket:
    key: str
    amount: Decimal | None  # None: unlimited
    starts_at: datetime
    ends_at: datetime  # NEVER for a bucket that does not expire
    priority: int
    source: Contribution | None

    def order(self) -> tuple[datetime, int, datetime, str]:
        return (self.ends_at, -self.priority, self.starts_at, self.key)


def buckets(
    entitlement: Entitlement, policy: QuotaPolicy, moment: datetime, anchor: datetime | None
) -> list[Bucket]:
    """The customer's live buckets at `moment`, in the order usage is drawn from them."""
    start, end = period(
        policy.reset, moment, anchor if policy.anchor is Anchor.SUBSCRIPTION else None
    )
    allowance = entitlement.source
    found = [
        Bucket(
            key=f"period:{start.isoformat()}",
            amount=_amount(entitlement.value),
            starts_at=start,
            ends_at=end,
            priority=allowance.priority if allowance else 0,
            source=allowance,
        )
    ]
    for item in entitlement.contributions:
        if item.plan is not None or item.grant_id is None:
            continue  # plan grants make up the allowance, above
        found.append(
            Bucket(
                key=f"grant:{item.grant_id}",
                amount=_amount(item.value),
                starts_at=item.starts_at or BEGINNING,
                ends_at=item.ends_at or NEVER,
                priority=item.priority,
                source=item,
            )
        )
    return sorted(found, key=Bucket.order)


def _amount(value: object) -> Decimal | None:
    if isinstance(value, Unlimited):
        return None
    return Decimal(value)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Standing:
    """Where a customer stands on one metered feature at one moment."""

    limit: Decimal | None  # every live bucket together; None: unlimited
    used: Decimal  # drawn from the live buckets, plus this period's overage
    remaining: Decimal | None
    overage: Decimal  # this period's usage beyond every bucket
    resets_at: datetime | None  # the end of the current period (None: never)


def standing(live: list[Bucket], drawn: Mapping[str, Decimal]) -> Standing:
    period_bucket = next(b for b in live if b.key.startswith("period:"))
    overage = drawn.get(overage_key(period_bucket), Decimal(0))
    used = sum((drawn.get(b.key, Decimal(0)) for b in live), Decimal(0)) + overage
    unlimited = any(b.amount is None for b in live)
    limit = None if unlimited else sum((b.amount or Decimal(0) for b in live), Decimal(0))
    remaining = None
    if limit is not None:
        remaining = sum(
            (
                max((b.amount or Decimal(0)) - drawn.get(b.key, Decimal(0)), Decimal(0))
                for b in live
            ),
            Decimal(0),
        )
    resets_at = None if period_bucket.ends_at == NEVER else period_bucket.ends_at
    return Standing(limit, used, remaining, overage, resets_at)


def overage_key(period_bucket: Bucket) -> str:
    return f"{OVERAGE}:{period_bucket.key.removeprefix('period:')}"


def draw(
    live: list[Bucket], drawn: Mapping[str, Decimal], amount: Decimal
) -> tuple[dict[str, Decimal], Decimal]:
    """Take `amount` from the buckets in order; returns the new totals and the overage
    (what no bucket covered, also added to this period's overage total)."""
    totals = dict(drawn)
    left = amount
    for bucket in live:
        if left <= 0:
            break
        taken = totals.get(bucket.key, Decimal(0))
        room = left if bucket.amount is None else max(bucket.amount - taken, Decimal(0))
        take = min(room, left)
        if take > 0:
            totals[bucket.key] = taken + take
            left -= take
    if left > 0:
        period_bucket = next(b for b in live if b.key.startswith("period:"))
        key = overage_key(period_bucket)
        totals[key] = totals.get(key, Decimal(0)) + left
    return totals, left


def prune(
    totals: Mapping[str, Decimal], ends: Mapping[str, datetime], cutoff: datetime
) -> tuple[dict[str, Decimal], dict[str, datetime]]:
    """Forget buckets that ended before `cutoff` (the late window): no late event can
    draw on them any more, and an account row stays small over the years."""
    keep = {key for key, end in ends.items() if end >= cutoff}
    return (
        {key: value for key, value in totals.items() if key in keep},
        {key: end for key, end in ends.items() if key in keep},
    )
