"""The states of a subscription (ARCHITECTURE: trialing, active, past_due, suspended,
canceled). Today an admin activates a subscription and cancels it; the other states
arrive with billing periods, payments and dunning."""

from __future__ import annotations

from enum import StrEnum


class SubscriptionStatus(StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"  # at most one per customer (a partial unique index)
    PAST_DUE = "past_due"
    SUSPENDED = "suspended"
    CANCELED = "canceled"  # final
