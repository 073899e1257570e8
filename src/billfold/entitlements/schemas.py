from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from billfold.catalog.catalog import Catalog
from billfold.catalog.model import to_json
from billfold.entitlements.rules import Contribution, Entitlement, Grant
from billfold.entitlements.service import CheckResult
from billfold.kit.schemas import Body, Instant, Metadata, Out

FeatureValueOut = bool | int | str | list[str]
SourceLabel = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")]


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


class UsageOut(Out):
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
    usage: UsageOut | None = None  # metered features, when resolved for now

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


class CheckOut(Out):
    customer: str
    feature: str
    allowed: bool
    value: FeatureValueOut
    remaining: int | str | None
    reason: str
    source: SourceOut | None

    @staticmethod
    def payload(customer: str, result: CheckResult) -> dict[str, Any]:
        """The answer as plain data, the check API's hot path: building the model costs
        more than the check. Tests validate these answers against this model."""
        source, remaining = result.source, result.remaining
        return {
            "customer": customer,
            "feature": result.feature,
            "allowed": result.allowed,
            "value": to_json(result.value),
            "remaining": remaining
            if remaining is None or isinstance(remaining, str)
            else to_json(remaining),
            "reason": result.reason,
            "source": None
            if source is None
            else {
                "grant_id": source.grant_id,
                "source": source.source,
                "plan": source.plan,
                "plan_version": source.plan_version,
                "value": to_json(source.value),
                "ends_at": source.ends_at,
            },
        }


class PluginOut(Out):
    customer: str
    plugin: str
    feature: str
    allowed: bool
    matched_pattern: str | None
    source: SourceOut | None


class GrantIn(Body):
    """Grant a whole plan (`plan`) or one feature (`feature` + `value`)."""

    plan: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    feature: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    value: bool | int | str | list[str] | None = None
    starts_at: Instant | None = None
    ends_at: Instant | None = None
    duration_days: Annotated[int, Field(ge=1, le=36_500)] | None = None
    source: SourceLabel = "admin"
    priority: Annotated[int, Field(ge=-1000, le=1000)] = 0
    metadata: Metadata = Field(default_factory=dict)


class RevokeIn(Body):
    reason: Annotated[str, Field(max_length=500)] | None = None


class GrantOut(Out):
    id: str
    customer: str
    source: str
    plan: str | None
    plan_version: int | None
    feature: str | None
    value: FeatureValueOut | None
    priority: int
    starts_at: datetime
    ends_at: datetime | None
    revoked_at: datetime | None
    subscription_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
    status: Literal["scheduled", "live", "ended", "revoked"]

    @classmethod
    def of(cls, catalog: Catalog, customer: str, grant: Grant, now: datetime) -> GrantOut:
        version = catalog.versions.get(grant.plan_version_id or "")
        if grant.revoked_at is not None and grant.revoked_at <= now:
            status: Literal["scheduled", "live", "ended", "revoked"] = "revoked"
        elif grant.live_at(now):
            status = "live"
        elif grant.starts_at > now:
            status = "scheduled"
        else:
            status = "ended"
        return cls(
            id=grant.id,
            customer=customer,
            source=grant.source,
            plan=version.plan_key if version else None,
            plan_version=version.version if version else None,
            feature=grant.feature_key,
            value=None if grant.value is None else to_json(grant.value),
            priority=grant.priority,
            starts_at=grant.starts_at,
            ends_at=grant.ends_at,
            revoked_at=grant.revoked_at,
            subscription_id=grant.subscription_id,
            metadata=grant.metadata,
            created_at=grant.created_at,
            status=status,
        )


class GrantsOut(Out):
    customer: str
    grants: list[GrantOut]
