"""The catalog as the check path reads it: immutable, cached per catalog revision."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog import repository
from billfold.catalog.ai import AiSettings
from billfold.catalog.coupons import Coupon
from billfold.catalog.features import Feature, FeatureType, FeatureValue, from_json
from billfold.catalog.meters import Meter
from billfold.catalog.prices import PlanPrice
from billfold.kit.errors import FieldError, NotFound


class FeatureNotFound(NotFound):
    code = "feature_not_found"


class PlanNotFound(NotFound):
    code = "plan_not_found"


@dataclass(frozen=True)
class PlanVersion:
    id: str
    plan_id: str
    plan_key: str
    version: int
    name: str
    description: str | None
    features: dict[str, FeatureValue]
    digest: str
    prices: tuple[PlanPrice, ...] = ()

    def price(self, currency: str, interval: str | None = None) -> PlanPrice | None:
        """The version's price in `currency` (and `interval`, when given; otherwise the
        first the plans file lists in that currency)."""
        for option in self.prices:
            if option.currency == currency and interval in (None, option.interval):
                return option
        return None


@dataclass(frozen=True)
class Plan:
    id: str
    key: str
    is_default: bool
    archived: bool
    current_version_id: str | None
    for_sale: bool = True  # offered to customers; False: had only by a grant or a code


@dataclass(frozen=True)
class Catalog:
    revision: int
    features: dict[str, Feature]
    plans: dict[str, Plan]
    versions: dict[str, PlanVersion]
    meters: dict[str, Meter] = field(default_factory=dict)
    ai: AiSettings = field(default_factory=AiSettings)
    coupons: dict[str, Coupon] = field(default_factory=dict)

    @property
    def default_version(self) -> PlanVersion | None:
        for plan in self.plans.values():
            if plan.is_default and not plan.archived and plan.current_version_id:
                return self.versions[plan.current_version_id]
        return None

    def current_version(self, plan_key: str) -> PlanVersion | None:
        plan = self.plans.get(plan_key)
        if plan is None or plan.archived or plan.current_version_id is None:
            return None
        return self.versions[plan.current_version_id]

    def require_plan(self, plan_key: str, *, pointer: str = "#/plan") -> PlanVersion:
        """The current version of an active plan, or `PlanNotFound` naming `pointer`."""
        version = self.current_version(plan_key)
        if version is None:
            raise PlanNotFound(
                f"no active plan {plan_key!r} in the catalog",
                errors=[FieldError("not an active plan of the catalog", pointer=pointer)],
            )
        return version

    def require_feature(
        self,
        key: str,
        *,
        kind: FeatureType | None = None,
        pointer: str | None = "#/feature",
        parameter: str | None = None,
    ) -> Feature:
        """An active feature (of type `kind`, if given), or `FeatureNotFound` naming where
        the request gave it: a body `pointer` or a query `parameter`."""
        feature = self.features.get(key)
        if feature is None or (kind is not None and feature.type is not kind):
            what = "feature" if kind is None else f"{kind} feature"
            where = FieldError(
                "not a feature of the catalog" if kind is None else f"expected a {what}",
                pointer=None if parameter else pointer,
                parameter=parameter,
            )
            raise FeatureNotFound(f"no {what} {key!r} in the catalog", errors=[where])
        return feature


async def load(session: AsyncSession, tenant_id: str, revision: int) -> Catalog:
    features = {
        row.key: Feature(
            key=row.key,
            type=FeatureType(row.type),
            description=row.description,
            config=dict(row.config),
        )
        for row in await repository.all_features(session, tenant_id)
        if row.archived_at is None
    }
    plans = {
        row.key: Plan(
            id=row.id,
            key=row.key,
            is_default=bool(row.is_default),
            archived=row.archived_at is not None,
            current_version_id=row.current_version_id,
            for_sale=bool(row.for_sale),
        )
        for row in await repository.all_plans(session, tenant_id)
    }
    versions = {
        row.id: PlanVersion(
            id=row.id,
            plan_id=row.plan_id,
            plan_key=row.plan_key,
            version=row.version,
            name=row.name,
            description=row.description,
            features={
                key: from_json(features[key].type, raw)
                for key, raw in row.features.items()
                if key in features
            },
            digest=row.digest,
            prices=tuple(PlanPrice.from_json(raw) for raw in row.prices or ()),
        )
        for row in await repository.all_versions(session, tenant_id)
    }
    meters = {
        row.key: Meter.from_json(row.key, row.definition)
        for row in await repository.all_meters(session, tenant_id)
        if row.archived_at is None
    }
    documents = await repository.settings_documents(session, tenant_id)
    return Catalog(
        revision=revision,
        features=features,
        plans=plans,
        versions=versions,
        meters=meters,
        ai=AiSettings.from_json(documents["ai"]) if "ai" in documents else AiSettings(),
        coupons={
            code: Coupon.from_json(code, raw)
            for code, raw in (documents.get("coupons") or {}).items()
        },
    )


async def current(session: AsyncSession, tenant_id: str) -> Catalog:
    """The tenant's catalog as it stands, read afresh (for the CLI and the workers)."""
    return await load(session, tenant_id, await repository.revision(session, tenant_id))


class CatalogCache:
    """One catalog per tenant, reloaded when the tenant's catalog revision moves on.

    A request learns the tenant's current revision with its API key. Read from the
    database, that is the revision of the moment; read from the key cache, it is kept
    current by the change feed (a `catalog:` topic drops every cached key), so a
    `plans apply` in another process is seen as soon as the feed brings it.
    """

    def __init__(self, max_tenants: int = 10_000) -> None:
        self._catalogs: dict[str, Catalog] = {}
        self._max_tenants = max_tenants

    def cached(self, tenant_id: str, revision: int) -> Catalog | None:
        cached = self._catalogs.get(tenant_id)
        return cached if cached is not None and cached.revision == revision else None

    async def get(self, session: AsyncSession, tenant_id: str, revision: int) -> Catalog:
        cached = self.cached(tenant_id, revision)
        if cached is not None:
            return cached
        catalog = await load(session, tenant_id, revision)
        if len(self._catalogs) >= self._max_tenants:
            self._catalogs.pop(next(iter(self._catalogs)))
        self._catalogs[tenant_id] = catalog
        return catalog
