"""Quota figures as the API and the event log write them: exact decimal strings,
`unlimited`, instants with Z, and the `QuotaExceeded` entry."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from billfold.catalog.features import Unlimited
from billfold.catalog.quotas import Enforcement
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.metering.aggregation import exact
from billfold.metering.quotas.buckets import Standing


def overage_entry(
    ctx: Context,
    customer: str,
    feature_key: str,
    mode: Enforcement,
    overage: Decimal,
    after: Standing,
) -> eventlog.Entry:
    """A `QuotaExceeded` entry for the event log."""
    data = {
        "customer": customer,
        "feature": feature_key,
        "overage": show(overage),
        "used": show(after.used),
        "limit": show(after.limit),
        "enforcement": mode.value,
    }
    return eventlog.Entry(ctx, "QuotaExceeded", data)


def instant(value: datetime | None) -> str | None:
    """An instant as the API writes it everywhere: ISO 8601, UTC, with Z."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def show(value: object) -> Any:
    if value is None or isinstance(value, Unlimited):
        return "unlimited"
    return str(exact(value))


def as_read(value: Any) -> Any:
    """A property as a meter reads it back from storage (numbers as Decimal)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    return Decimal(repr(value))
