"""Request and response models of the grants API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from billfold.catalog.catalog import Catalog
from billfold.catalog.features import to_json
from billfold.grants.resolution import Grant
from billfold.kit.schemas import Body, Instant, Metadata, Out, Storable, Text

FeatureValueOut = bool | int | str | list[str]
# A feature's value as a client sends it: its text is stored as sent.
FeatureValueIn = bool | int | Text | list[Text]
SourceLabel = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,39}$")]


class GrantIn(Body):
    """Grant a whole plan (`plan`) or one feature (`feature` + `value`)."""

    plan: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    feature: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    value: FeatureValueIn | None = None
    starts_at: Instant | None = None
    ends_at: Instant | None = None
    duration_days: Annotated[int, Field(ge=1, le=36_500)] | None = None
    source: SourceLabel = "admin"
    priority: Annotated[int, Field(ge=-1000, le=1000)] = 0
    metadata: Metadata = Field(default_factory=dict)


class RevokeIn(Body):
    reason: Annotated[str, Field(max_length=500), Storable] | None = None


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
