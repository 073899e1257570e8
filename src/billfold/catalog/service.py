"""Diff a plans file against the stored catalog, and apply it as new immutable versions."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog import catalog as catalog_reader
from billfold.catalog import plansfile, repository
from billfold.catalog.catalog import Catalog
from billfold.catalog.coupons import Coupon
from billfold.catalog.features import FeatureType, PlanDefinition, to_json
from billfold.catalog.plansfile import CatalogSpec, PlansFileError
from billfold.catalog.prices import PlanPrice
from billfold.kit import eventlog
from billfold.kit.changes import publish
from billfold.kit.context import Context
from billfold.kit.errors import BillfoldError, FieldError
from billfold.kit.ids import new_id


@dataclass(frozen=True)
class Change:
    """One line of a diff: `+ plan pro`, `~ plan pro v1 -> v2`, `- feature x (archived)`."""

    action: str  # "add", "change", "archive", "restore"
    subject: str  # "feature" or "plan"
    key: str
    details: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        sign = {"add": "+", "change": "~", "archive": "-", "restore": "+"}[self.action]
        head = f"{sign} {self.subject} {self.key}"
        if self.action in ("archive", "restore"):
            head += f" ({self.action}d)"
        return [head, *(f"    {detail}" for detail in self.details)]


@dataclass(frozen=True)
class Diff:
    changes: list[Change] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes

    def lines(self) -> list[str]:
        return [line for change in self.changes for line in change.lines()]

    def render(self) -> str:
        return "\n".join(self.lines()) if self.changes else "no changes"


class InvalidPlans(BillfoldError):
    status = 422
    code = "invalid_plans"
    title = "The plans document is not valid"


@dataclass(frozen=True)
class Submitted:
    applied: bool
    revision: int
    changes: list[str]


async def submit(
    session: AsyncSession, ctx: Context, raw: bytes, media_type: str, *, dry_run: bool
) -> Submitted:
    """Apply a plans document sent to the API (YAML or JSON), or, with `dry_run`, only
    say what it would change. Every problem is an `InvalidPlans` with its path."""
    try:
        spec = plansfile.read(raw, media_type)
        if dry_run:
            catalog, archived = await stored(session, ctx.tenant_id)
            preview = diff(catalog, archived, spec)
            return Submitted(applied=False, revision=catalog.revision, changes=preview.lines())
        result, revision = await apply(session, ctx, spec)
    except PlansFileError as error:
        raise InvalidPlans(
            f"{len(error.errors)} problem(s) in the plans document",
            errors=[FieldError(message) for message in error.errors],
        ) from None
    return Submitted(applied=not result.empty, revision=revision, changes=result.lines())


def plan_digest(plan: PlanDefinition) -> str:
    """What makes a plan version: its name, description, feature values and prices. A
    plan without prices hashes as it did before plans had prices, so a stored catalog
    keeps its versions."""
    body: dict[str, Any] = {
        "name": plan.name,
        "description": plan.description,
        "features": {key: to_json(value) for key, value in sorted(plan.features.items())},
    }
    if plan.prices:
        body["prices"] = [price.as_json() for price in plan.prices]
    encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


async def stored(session: AsyncSession, tenant_id: str) -> tuple[Catalog, dict[str, Any]]:
    """The catalog as stored, including archived features (for type-change checks)."""
    catalog = await catalog_reader.current(session, tenant_id)
    archived = {
        row.key: FeatureType(row.type)
        for row in await repository.all_features(session, tenant_id)
        if row.archived_at is not None
    }
    return catalog, archived


def conflicts(catalog: Catalog, archived_features: dict[str, Any], spec: CatalogSpec) -> list[str]:
    """What a valid plans file may still not do to this stored catalog, as `path:
    message`: change the type of a feature, active or archived (grants hold its values)."""
    errors = []
    for key, feature in spec.features.items():
        current = catalog.features.get(key)
        old_type = current.type if current is not None else archived_features.get(key)
        if old_type is not None and old_type is not feature.type:
            errors.append(
                f"features.{key}.type: cannot change from {old_type} to {feature.type}; "
                "declare a new feature key instead"
            )
    return errors


def diff(catalog: Catalog, archived_features: dict[str, Any], spec: CatalogSpec) -> Diff:
    """What applying `spec` would change; `PlansFileError` if it `conflicts`."""
    errors = conflicts(catalog, archived_features, spec)
    if errors:
        raise PlansFileError(errors)
    changes: list[Change] = []
    for key, feature in spec.features.items():
        current = catalog.features.get(key)
        if current is None and key in archived_features:
            changes.append(Change("restore", "feature", key, (f"type {feature.type}",)))
        elif current is None:
            changes.append(Change("add", "feature", key, (f"type {feature.type}",)))
        else:
            changed = list(_field_changes(current.config, feature.config))
            if current.description != feature.description:
                changed.append("description changed")
            if changed:
                changes.append(Change("change", "feature", key, tuple(changed)))
    for key in catalog.features:
        if key not in spec.features:
            changes.append(Change("archive", "feature", key))
    changes.extend(_meter_changes(catalog, spec))
    ai_changes = _field_changes(catalog.ai.as_json(), spec.ai.as_json())
    if ai_changes:
        changes.append(Change("change", "settings", "ai", ai_changes))
    coupon_changes = _field_changes(_coupons_json(catalog.coupons), _coupons_json(spec.coupons))
    if coupon_changes:
        changes.append(Change("change", "settings", "coupons", coupon_changes))

    for key, plan in spec.plans.items():
        stored_plan = catalog.plans.get(key)
        version = (
            catalog.versions.get(stored_plan.current_version_id or "") if stored_plan else None
        )
        if stored_plan is None or version is None:
            details = tuple(f"{k}: {_show(v)}" for k, v in sorted(plan.features.items()))
            prices = tuple(f"price {p.describe()}: {_show_price(p)}" for p in plan.prices)
            changes.append(Change("add", "plan", key, ("v1", *details, *prices)))
            continue
        details_list: list[str] = []
        if version.digest != plan_digest(plan):
            details_list.append(f"v{version.version} -> v{version.version + 1}")
            if version.name != plan.name:
                details_list.append(f"name: {version.name!r} -> {plan.name!r}")
            if version.description != plan.description:
                details_list.append("description changed")
            for feature_key in sorted(set(version.features) | set(plan.features)):
                before = version.features.get(feature_key)
                after = plan.features.get(feature_key)
                if before != after:
                    details_list.append(f"{feature_key}: {_show(before)} -> {_show(after)}")
            details_list.extend(_price_changes(version.prices, plan.prices))
        if stored_plan.is_default != plan.default:
            details_list.append(f"default: {stored_plan.is_default} -> {plan.default}")
        if stored_plan.for_sale != plan.for_sale:
            details_list.append(f"for_sale: {stored_plan.for_sale} -> {plan.for_sale}")
        if stored_plan.archived:
            changes.append(Change("restore", "plan", key, tuple(details_list)))
        elif details_list:
            changes.append(Change("change", "plan", key, tuple(details_list)))
    for key, stored_plan in catalog.plans.items():
        if key not in spec.plans and not stored_plan.archived:
            changes.append(Change("archive", "plan", key))
    return Diff(changes)


def _price_changes(before: tuple[PlanPrice, ...], after: tuple[PlanPrice, ...]) -> list[str]:
    """`price USD every month: ...` for each price added, removed or changed."""
    old = {price.key: price for price in before}
    lines = []
    for price in after:
        was = old.get(price.key)
        label = f"price {price.describe()}"
        if was is None:
            lines.append(f"{label}: added {_show_price(price)}")
        elif was != price:
            changed = _field_changes(was.as_json(), price.as_json())
            lines.extend(f"{label}: {change}" for change in changed)
    new = {price.key for price in after}
    lines.extend(f"price {p.describe()}: removed" for p in before if p.key not in new)
    return lines


def _coupons_json(coupons: Mapping[str, Coupon]) -> dict[str, Any]:
    return {code: coupon.as_json() for code, coupon in sorted(coupons.items())}


def _show_price(price: PlanPrice) -> str:
    shown = {k: v for k, v in price.as_json().items() if k not in ("currency", "interval")}
    if shown.get("interval_count") == 1:
        del shown["interval_count"]
    return json.dumps(shown)


def _meter_changes(catalog: Catalog, spec: CatalogSpec) -> list[Change]:
    changes: list[Change] = []
    for key, meter in spec.meters.items():
        current = catalog.meters.get(key)
        if current is None:
            summary = f"{meter.aggregation} of {meter.event_type}"
            if meter.property:
                summary = f"{meter.aggregation}({meter.property}) of {meter.event_type}"
            changes.append(Change("add", "meter", key, (summary,)))
            continue
        details = _field_changes(current.as_json(), meter.as_json())
        if details:
            changes.append(Change("change", "meter", key, details))
    for key in catalog.meters:
        if key not in spec.meters:
            changes.append(Change("archive", "meter", key))
    return changes


async def _apply_meters(
    session: AsyncSession, ctx: Context, catalog: Catalog, spec: CatalogSpec
) -> None:
    now = ctx.now
    stored_keys = {row.key for row in await repository.all_meters(session, ctx.tenant_id)}
    for key, meter in spec.meters.items():
        if key in stored_keys:
            await repository.update_meter(
                session, ctx.tenant_id, key, now, definition=meter.as_json(), archived_at=None
            )
        else:
            await repository.insert_meter(
                session,
                id=new_id("mtr"),
                tenant_id=ctx.tenant_id,
                key=key,
                definition=meter.as_json(),
                created_at=now,
                updated_at=now,
            )
    for key in catalog.meters:
        if key not in spec.meters:
            await repository.update_meter(session, ctx.tenant_id, key, now, archived_at=now)


def _field_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[str, ...]:
    """`name: old -> new` for every field that differs, including fields one side lacks."""
    return tuple(
        f"{name}: {json.dumps(before.get(name))} -> {json.dumps(after.get(name))}"
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    )


def _show(value: object) -> str:
    if value is None:
        return "(unset)"
    return json.dumps(to_json(value))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Initial:
    """What `initialize` did: applied the file to a new catalog, or left a catalog that
    was there alone and only compared the file with it (`changes` it would make, or the
    `problems` that would refuse it)."""

    applied: bool
    revision: int
    changes: Diff
    problems: tuple[str, ...] = ()


async def initialize(session: AsyncSession, ctx: Context, spec: CatalogSpec) -> Initial:
    """Apply `spec` only if the tenant has no catalog yet; otherwise change nothing and
    say how the stored catalog and `spec` differ (decision 0029). Locks the tenant's
    catalog first, so two of these at once apply the file once."""
    revision = await repository.lock_revision(session, ctx.tenant_id, ctx.now)
    if revision == 0:
        changes, revision = await apply(session, ctx, spec)
        return Initial(applied=True, revision=revision, changes=changes)
    catalog, archived = await stored(session, ctx.tenant_id)
    try:
        changes = diff(catalog, archived, spec)
    except PlansFileError as error:
        return Initial(False, revision, Diff(), problems=tuple(error.errors))
    return Initial(applied=False, revision=revision, changes=changes)


async def apply(session: AsyncSession, ctx: Context, spec: CatalogSpec) -> tuple[Diff, int]:
    """Store what changed as new plan versions; returns the diff and the catalog revision.

    Locks the tenant's catalog first, so two applies at once run one after the other.
    """
    revision = await repository.lock_revision(session, ctx.tenant_id, ctx.now)
    catalog, archived = await stored(session, ctx.tenant_id)
    changes = diff(catalog, archived, spec)
    if changes.empty:
        return changes, revision
    revision = await repository.bump_revision(session, ctx.tenant_id, ctx.now)
    await publish(session, f"catalog:{ctx.tenant_id}")
    now = ctx.now
    for key, feature in spec.features.items():
        if key in catalog.features or key in archived:
            await repository.update_feature(
                session,
                ctx.tenant_id,
                key,
                now,
                description=feature.description,
                config=feature.config,
                archived_at=None,
            )
        else:
            await repository.insert_feature(
                session,
                id=new_id("fea"),
                tenant_id=ctx.tenant_id,
                key=key,
                type=feature.type.value,
                description=feature.description,
                config=feature.config,
                created_at=now,
                updated_at=now,
            )
    for key in catalog.features:
        if key not in spec.features:
            await repository.update_feature(session, ctx.tenant_id, key, now, archived_at=now)
    await _apply_meters(session, ctx, catalog, spec)
    if catalog.ai != spec.ai:
        await repository.put_settings_document(session, ctx.tenant_id, "ai", spec.ai.as_json(), now)
    if catalog.coupons != spec.coupons:
        document = _coupons_json(spec.coupons)
        await repository.put_settings_document(session, ctx.tenant_id, "coupons", document, now)

    for key, plan in spec.plans.items():
        stored_plan = catalog.plans.get(key)
        current = (
            catalog.versions.get(stored_plan.current_version_id or "") if stored_plan else None
        )
        digest = plan_digest(plan)
        plan_id = stored_plan.id if stored_plan else new_id("pln")
        if stored_plan is None:
            await repository.insert_plan(
                session,
                id=plan_id,
                tenant_id=ctx.tenant_id,
                key=key,
                is_default=plan.default,
                for_sale=plan.for_sale,
                current_version_id=None,
                created_at=now,
            )
        version_id = current.id if current else None
        if current is None or current.digest != digest:
            version_id = new_id("plv")
            await repository.insert_version(
                session,
                id=version_id,
                tenant_id=ctx.tenant_id,
                plan_id=plan_id,
                version=(current.version + 1) if current else 1,
                name=plan.name,
                description=plan.description,
                features={k: to_json(v) for k, v in sorted(plan.features.items())},
                prices=[price.as_json() for price in plan.prices],
                digest=digest,
                created_at=now,
            )
        await repository.update_plan(
            session,
            plan_id,
            is_default=plan.default,
            for_sale=plan.for_sale,
            current_version_id=version_id,
            archived_at=None,
        )
    for key, stored_plan in catalog.plans.items():
        if key not in spec.plans and not stored_plan.archived:
            await repository.update_plan(session, stored_plan.id, is_default=False, archived_at=now)

    await eventlog.record(
        session,
        ctx,
        "CatalogApplied",
        {"revision": revision, "changes": changes.lines()},
    )
    return changes, revision
