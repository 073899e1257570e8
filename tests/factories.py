"""Factories: a test states what it needs in one line, and gets typed values back.

The builders (`tenant`, `customer`, `grant`, `subscription`, `events`) work through the
services in a transaction of their own, as the operator, at the harness's clock: they
set a scene, they are not what is tested. The readers (`check`, `entitlements`,
`quota_usage`) go through the API, as a product would, and insist on a 200.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from billfold.catalog import catalog as catalog_reader
from billfold.catalog import plansfile
from billfold.catalog import service as catalog_service
from billfold.customers import service as customers
from billfold.customers.service import Customer
from billfold.entitlements.schemas import CheckOut
from billfold.grants import service as grants
from billfold.grants.resolution import Grant
from billfold.grants.service import Window
from billfold.kit.context import Actor, Context
from billfold.kit.db import Database
from billfold.metering import events as usage_events
from billfold.metering.ingest import Outcome, ingest
from billfold.subscriptions import service as subscriptions
from billfold.subscriptions.service import NewSubscription, Subscription
from billfold.tenants import service as tenants
from billfold.tenants.scopes import Scope

if TYPE_CHECKING:
    from tests.conftest import Harness

OPERATOR = Actor(kind="operator", id="test", scope="admin")


async def tenant(database: Database, now: datetime, plans: Path | str) -> tuple[str, str]:
    """A new tenant with `plans` (a file, or a plans document) applied, and its admin
    key's token."""
    spec = plansfile.load(plans) if isinstance(plans, Path) else plansfile.parse(plans)
    async with database.transaction() as session:
        created = await tenants.create_tenant(
            session, f"t-{secrets.token_hex(6)}", "Test tenant", now
        )
        ctx = Context(created.id, OPERATOR, "setup", now)
        _key, token = await tenants.create_key(session, ctx, name="admin", scope=Scope.ADMIN)
        await catalog_service.apply(session, ctx, spec)
    return created.id, token


async def customer(harness: Harness, external_id: str = "ada") -> Customer:
    async with harness.database.transaction() as session:
        return await customers.ensure(session, harness.operator(), external_id)


async def grant(
    harness: Harness,
    external_id: str = "ada",
    *,
    plan: str | None = None,
    feature: str | None = None,
    value: Any = None,
    days: int | None = None,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    source: str = "admin",
) -> Grant:
    """A grant of a plan, or of one feature and its value, from now (or `starts_at`)
    for `days` or until `ends_at`, or open-ended."""
    ctx = harness.operator()
    starts = starts_at or ctx.now
    window = Window(starts, starts + timedelta(days=days) if days is not None else ends_at)
    async with harness.database.transaction() as session:
        catalog = await catalog_reader.current(session, ctx.tenant_id)
        holder = await customers.ensure(session, ctx, external_id)
        if plan is not None:
            return await grants.grant_plan(
                session, ctx, holder, catalog.require_plan(plan), window, source=source
            )
        assert feature is not None, "grant a plan or a feature"
        return await grants.grant_feature(
            session, ctx, catalog, holder, feature, value, window, source=source
        )


async def subscription(harness: Harness, external_id: str, plan: str) -> Subscription:
    ctx = harness.operator()
    async with harness.database.transaction() as session:
        catalog = await catalog_reader.current(session, ctx.tenant_id)
        return await subscriptions.create(
            session, ctx, catalog, external_id, NewSubscription(plan=plan)
        )


async def events(
    harness: Harness,
    external_id: str = "ada",
    event_type: str = "ai.tokens",
    *,
    count: int = 1,
    at: datetime | None = None,
    **properties: Any,
) -> list[Outcome]:
    """`count` usage events of one customer, each with `properties`, stored (and drawn
    from quotas) as `POST /v1/events` stores them."""
    ctx = harness.operator()
    prefix = secrets.token_hex(4)
    checked = [
        usage_events.UsageEvent(
            f"{prefix}-{index}", external_id, event_type, None, None, at, dict(properties)
        )
        for index in range(count)
    ]
    async with harness.database.transaction() as session:
        catalog = await catalog_reader.current(session, ctx.tenant_id)
        outcomes, _overages = await ingest(
            session, ctx, catalog, checked, late_window=timedelta(days=7)
        )
    return outcomes


async def check(harness: Harness, **body: object) -> dict[str, Any]:
    """`POST /v1/entitlements/check`, its answer held to the documented schema."""
    response = await harness.post("/v1/entitlements/check", body)
    assert response.status_code == 200, response.text
    CheckOut.model_validate_json(response.content)  # the hot path builds plain data
    return dict(response.json())


async def entitlements(harness: Harness, external_id: str = "ada") -> dict[str, Any]:
    response = await harness.get(f"/v1/customers/{external_id}/entitlements")
    assert response.status_code == 200, response.text
    return dict(response.json()["entitlements"])


async def quota_usage(
    harness: Harness, external_id: str = "ada", feature: str = "ai.tokens"
) -> dict[str, Any]:
    """Where a customer stands on a metered feature, as the entitlements route says."""
    return dict((await entitlements(harness, external_id))[feature]["usage"])
