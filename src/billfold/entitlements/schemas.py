"""Request and response models of the check API and the entitlements routes."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field

from billfold.catalog.features import to_json
from billfold.grants.resolution import Contribution, Entitlement
from billfold.kit.schemas import Body, Out
from billfold.metering.schemas import UsageProperties

FeatureValueOut = bool | int | str | list[str]


class SourceOut(Out):
    grant_id: str | None
    source: str
    plan: str | None
    plan_version: int | None
    value: FeatureValueOut
    ends_at: datetime | None

    @classmethod
    def of(cls, item: Contribution) -> SourceOut:
        # Built from values Billfold computed itself: no need to validate them again.
        return cls.model_construct(
            grant_id=item.grant_id,
            source=item.source,
            plan=item.plan,
            plan_version=item.plan_version,
            value=to_json(item.value),
            ends_at=item.ends_at,
        )


class QuotaUsageOut(Out):
    """A metered feature's standing in the current reset period (decimal strings)."""

    used: str
    remaining: str  # or "unlimited"
    limit: str  # every live bucket together, or "unlimited"
    overage: str
    resets_at: datetime | None  # None: the quota never resets
    enforcement: str


class EntitlementOut(Out):
    type: str
    value: FeatureValueOut  # for a metered feature: the plan allowance per period
    source: SourceOut | None
    grants: list[SourceOut]
    usage: QuotaUsageOut | None = None  # metered features, when resolved for now

    @classmethod
    def of(cls, entitlement: Entitlement) -> EntitlementOut:
        return cls(
            type=entitlement.feature.type.value,
            value=to_json(entitlement.value),
            source=SourceOut.of(entitlement.source) if entitlement.source else None,
            grants=[SourceOut.of(item) for item in entitlement.contributions],
        )


class EntitlementsOut(Out):
    customer: str
    known: bool
    at: datetime
    entitlements: dict[str, EntitlementOut]


class CheckIn(Body):
    customer: Annotated[str, Field(min_length=1, max_length=255)]
    feature: Annotated[str, Field(min_length=1, max_length=100)]
    requested: (
        Annotated[int, Field(ge=1, le=1_000_000_000)]
        | Annotated[str, Field(min_length=1, max_length=200)]
        | None
    ) = None
    current: Annotated[int, Field(ge=0, le=1_000_000_000_000)] | None = None
    properties: UsageProperties = Field(
        default_factory=dict,
        max_length=20,
        description="metered features only: the properties the consume will send. Past "
        "the quota of a feature paid from a wallet, the check prices the overage as that "
        "consume would: AI tokens at the `credits` rate of the `model` named here",
    )


class CheckOut(Out):
    customer: str
    feature: str
    allowed: bool
    value: FeatureValueOut
    remaining: int | str | None
    reason: str
    source: SourceOut | None


class PluginOut(Out):
    customer: str
    plugin: str
    feature: str
    allowed: bool
    matched_pattern: str | None
    source: SourceOut | None
