"""Gauges kept current: a limit fed by a meter is answered from one kept row, and that row
always says what the read-time aggregation of every stored event says."""

from __future__ import annotations

import asyncio
import secrets
import signal
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from billfold.catalog import catalog as catalog_reader
from billfold.catalog.catalog import Catalog
from billfold.kit.periods import BEGINNING, NEVER
from billfold.metering import gauges, usage
from billfold.metering.tables import gauge_values
from tests import factories
from tests.conftest import Harness, assert_problem, new_harness, postgresql_only
from tests.metering import test_ingest_stream as stream_tests

PLANS = """
version: 1
meters:
  spaces:
    event: space.created
    subtract: space.deleted
    aggregation: count
    filters: {kind: {in: [team, solo]}}
  storage:
    event: disk.used
    subtract: disk.freed
    aggregation: sum
    property: gb
  tokens:
    event: ai.tokens
    aggregation: sum
    property: tokens
features:
  spaces.max: {type: limit, meter: spaces}
  storage.max: {type: limit, meter: storage}
  tokens.max: {type: limit, meter: tokens}
  ai.tokens: {type: metered, meter: tokens, reset: month}
plans:
  free:
    name: Free
    default: true
    features: {spaces.max: 3, storage.max: 100, tokens.max: 10, ai.tokens: 1000}
"""


async def catalog_of(harness: Harness) -> Catalog:
    async with harness.database.transaction(write=False) as session:
        return await catalog_reader.current(session, harness.tenant_id)


async def kept(harness: Harness, customer: str, meter: str) -> Decimal:
    """The gauge as the check reads it (storing the customer's first value)."""
    return await kept_under(harness, await catalog_of(harness), customer, meter)


async def kept_under(harness: Harness, catalog: Catalog, customer: str, meter: str) -> Decimal:
    unit = harness.database.unit(write=False)
    try:
        return await gauges.current(
            unit, harness.database, catalog, harness.tenant_id, customer, meter
        )
    finally:
        await unit.rollback()
        await unit.close()


async def aggregated(harness: Harness, customer: str, meter: str) -> Decimal:
    """The read-time aggregation of every stored event, as usage reports compute it."""
    catalog = await catalog_of(harness)
    async with harness.database.transaction(write=False) as session:
        report = await usage.usage(
            session, catalog, harness.tenant_id, customer, meter, BEGINNING, NEVER
        )
    return Decimal(report.buckets[0].value)


async def stored_row(harness: Harness, customer: str, meter: str) -> str | None:
    async with harness.database.transaction(write=False) as session:
        found = await session.execute(
            select(gauge_values.c.value).where(
                gauge_values.c.tenant_id == harness.tenant_id,
                gauge_values.c.meter_key == meter,
                gauge_values.c.customer == customer,
            )
        )
        return found.scalar_one_or_none()


async def space_check(harness: Harness, customer: str = "ada") -> dict[str, Any]:
    return await factories.check(harness, customer=customer, feature="spaces.max")


@pytest.fixture
async def gauged(backend: str, database_url: str) -> Any:
    built = await new_harness(database_url, plans=PLANS)
    try:
        yield built
    finally:
        await built.client.aclose()
        await built.database.dispose()


@pytest.mark.anyio
async def test_the_check_reads_a_kept_row_that_ingest_updates(gauged: Harness) -> None:
    await factories.events(gauged, "ada", "space.created", count=2, kind="team")
    # No row yet: the first check computes it from the events stored before it.
    assert await stored_row(gauged, "ada", "spaces") is None
    assert (await space_check(gauged))["remaining"] == 1
    assert await stored_row(gauged, "ada", "spaces") == "2"
    # From then on each stored event moves the row, in the ingest's transaction.
    await factories.events(gauged, "ada", "space.created", count=1, kind="solo")
    await factories.events(gauged, "ada", "space.created", count=4, kind="other")  # filtered
    await factories.events(gauged, "ada", "space.deleted", count=1, kind="team")
    await factories.events(gauged, "bo", "space.created", count=1, kind="team")
    assert await stored_row(gauged, "ada", "spaces") == "2"
    await factories.events(gauged, "ada", "space.created", count=1, kind="team")
    assert await stored_row(gauged, "ada", "spaces") == "3"
    answer = await space_check(gauged)
    assert (answer["allowed"], answer["remaining"], answer["reason"]) == (
        False,
        0,
        "limit_reached",
    )
    assert await kept(gauged, "ada", "spaces") == await aggregated(gauged, "ada", "spaces")
    # The check reads the row, not the events: a row set by hand is what it answers.
    async with gauged.database.transaction() as session:
        await session.execute(
            update(gauge_values)
            .where(gauge_values.c.tenant_id == gauged.tenant_id, gauge_values.c.customer == "ada")
            .values(value="1")
        )
    assert (await space_check(gauged))["remaining"] == 2


@pytest.mark.anyio
async def test_a_duplicate_event_does_not_move_the_gauge(gauged: Harness) -> None:
    await space_check(gauged)  # keeps ada's value from here on
    body = {"idempotency_key": "s-1", "customer": "ada", "type": "space.created"}
    event = {**body, "properties": {"kind": "team"}}
    for _ in range(3):
        response = await gauged.post("/v1/events", [event, event])
        assert response.status_code == 200, response.text
    assert await stored_row(gauged, "ada", "spaces") == "1"
    assert (await space_check(gauged))["remaining"] == 2


@pytest.mark.anyio
async def test_late_events_count_whatever_their_order(gauged: Harness) -> None:
    now = gauged.clock.now()
    await factories.events(gauged, "ada", "disk.used", gb="1.5", at=now)  # not a number
    await factories.events(gauged, "bo", "disk.used", gb=1.5, at=now)
    await kept(gauged, "bo", "storage")
    for hours, kind, gb in ((5, "disk.freed", 1), (1, "disk.used", 2.25), (30, "disk.used", 4)):
        await factories.events(gauged, "bo", kind, gb=gb, at=now - timedelta(hours=hours))
    assert await stored_row(gauged, "bo", "storage") == "6.75"
    assert await kept(gauged, "bo", "storage") == await aggregated(gauged, "bo", "storage")


@pytest.mark.anyio
async def test_a_value_the_meter_cannot_add_is_refused_as_at_read_time(gauged: Harness) -> None:
    await factories.events(gauged, "ada", "disk.used", gb=2)
    await factories.check(gauged, customer="ada", feature="storage.max")
    await factories.events(gauged, "ada", "disk.used", gb="abc")  # stored: ingest's rules aside
    assert await stored_row(gauged, "ada", "storage") is None
    response = await gauged.post(
        "/v1/entitlements/check", {"customer": "ada", "feature": "storage.max"}
    )
    assert_problem(response, 409, "meter_value_not_a_number")


@pytest.mark.anyio
async def test_a_meter_changed_in_a_new_catalog_counts_earlier_events(gauged: Harness) -> None:
    await factories.events(gauged, "ada", "space.created", count=2, kind="team")
    await factories.events(gauged, "ada", "space.created", count=1, kind="solo")
    assert (await space_check(gauged))["remaining"] == 0
    before = await catalog_of(gauged)
    # The meter now counts team spaces only; the limit is 5.
    await gauged.apply_plans(
        PLANS.replace(
            "filters: {kind: {in: [team, solo]}}", "filters: {kind: {equals: team}}"
        ).replace("spaces.max: 3", "spaces.max: 5")
    )
    await factories.events(gauged, "ada", "space.created", count=1, kind="solo")
    await factories.events(gauged, "ada", "space.created", count=1, kind="team")
    answer = await space_check(gauged)
    assert answer["remaining"] == 2  # 5 - 3 team spaces, two stored before the change
    assert await stored_row(gauged, "ada", "spaces") == "3"
    # A process still holding the earlier catalog gets that catalog's answer, at read time,
    # and does not take the kept meter back.
    assert await kept_under(gauged, before, "ada", "spaces") == 5
    assert await stored_row(gauged, "ada", "spaces") == "3"
    # A meter added in a new catalog counts the events stored before it.
    await factories.events(gauged, "ada", "seat.added", count=4)
    await gauged.apply_plans(
        PLANS.replace(
            "features:\n",
            "  seats:\n    event: seat.added\n    aggregation: count\nfeatures:\n",
        )
        .replace(
            "  ai.tokens: {type", "  seats.max: {type: limit, meter: seats}\n  ai.tokens: {type"
        )
        .replace("ai.tokens: 1000}", "ai.tokens: 1000, seats.max: 10}")
    )
    seats = await factories.check(gauged, customer="ada", feature="seats.max")
    assert seats["remaining"] == 6


@pytest.mark.anyio
async def test_a_meter_a_quota_also_reads_is_aggregated(gauged: Harness) -> None:
    # Consume stores its events apart from ingest: such a meter is never kept.
    await gauged.post(
        "/v1/entitlements/consume",
        {"customer": "ada", "feature": "ai.tokens", "amount": 7, "idempotency_key": "c-1"},
    )
    answer = await factories.check(gauged, customer="ada", feature="tokens.max")
    assert answer["remaining"] == 3
    assert await stored_row(gauged, "ada", "tokens") is None


# Random histories: each check's answer is the read-time aggregation's.
_EVENT = st.tuples(
    st.sampled_from(["space.created", "space.deleted", "disk.used", "disk.freed", "other"]),
    st.sampled_from(["ada", "bo"]),
    st.integers(0, 12),  # the key: a repeated one is a duplicate
    st.sampled_from(["team", "solo", "else", None]),
    st.one_of(
        st.none(),
        st.integers(-5, 50),
        st.decimals(min_value=-10, max_value=100, places=2, allow_nan=False),
    ),
    st.integers(0, 60 * 24 * 6),  # minutes before now
)
_STEP = st.one_of(
    st.tuples(st.just("events"), st.lists(_EVENT, min_size=1, max_size=6)),
    st.tuples(st.just("check"), st.sampled_from(["ada", "bo"])),
)


@given(history=st.lists(_STEP, min_size=1, max_size=12))
@settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_kept_gauges_equal_the_read_time_aggregation(
    backend: str, database_url: str, history: list[tuple[str, Any]]
) -> None:
    asyncio.run(_replay(database_url, history))


async def _replay(database_url: str, history: list[tuple[str, Any]]) -> None:
    harness = await new_harness(database_url, plans=PLANS)
    run = secrets.token_hex(3)
    try:
        now = harness.clock.now()
        for step, argument in history:
            if step == "check":
                for meter in ("spaces", "storage"):
                    assert await kept(harness, argument, meter) == await aggregated(
                        harness, argument, meter
                    )
                continue
            batch = []
            for kind, customer, key, tag, amount, minutes in argument:
                properties: dict[str, Any] = {}
                if tag is not None:
                    properties["kind"] = tag
                if amount is not None:
                    properties["gb"] = amount
                batch.append(
                    {
                        "idempotency_key": f"{run}-{key}",
                        "customer": customer,
                        "type": kind,
                        "timestamp": (now - timedelta(minutes=minutes)).isoformat(),
                        "properties": {
                            k: float(v) if isinstance(v, Decimal) else v
                            for k, v in properties.items()
                        },
                    }
                )
            response = await harness.post("/v1/events", batch)
            assert response.status_code in (200, 422), response.text
        for customer in ("ada", "bo"):
            for meter in ("spaces", "storage"):
                assert await kept(harness, customer, meter) == await aggregated(
                    harness, customer, meter
                )
    finally:
        await harness.client.aclose()
        await harness.database.dispose()


@postgresql_only  # parallel writers on one customer: SQLite runs one write at a time
@pytest.mark.anyio
async def test_parallel_ingests_and_first_checks_agree_with_the_aggregation(
    gauged: Harness,
) -> None:
    await space_check(gauged, "ada")  # ada is kept before the storm; bo's first check races it
    await factories.events(gauged, "bo", "space.created", count=3, kind="team")

    async def report(customer: str, round_: int) -> None:
        keys = [(round_ * 3 + i) % 40 for i in range(5)]  # some repeat, as retries
        batch = [  # a retry sends the same event again: its body follows from its key
            {
                "idempotency_key": f"{customer}-{key}",
                "customer": customer,
                "type": "space.deleted" if key % 4 == 0 else "space.created",
                "properties": {"kind": "team" if key % 2 else "solo"},
            }
            for key in keys
        ]
        response = await gauged.post("/v1/events", batch)
        assert response.status_code == 200, response.text

    async def look(customer: str) -> None:
        await kept(gauged, customer, "spaces")

    work = [report(customer, n) for n in range(16) for customer in ("ada", "bo")]
    work += [look("bo") for _ in range(12)] + [look("ada") for _ in range(2)]
    order = list(range(len(work)))
    order = order[::2] + order[1::2]  # checks land amid the ingests
    await asyncio.gather(*(work[i] for i in order))
    for customer in ("ada", "bo"):
        assert await stored_row(gauged, customer, "spaces") is not None
        assert await kept(gauged, customer, "spaces") == await aggregated(
            gauged, customer, "spaces"
        )


@pytest.mark.anyio
async def test_the_ingest_worker_keeps_gauges_current(streaming: Harness) -> None:
    """Events queued on the NATS stream move the kept row when the worker stores them."""
    await factories.events(streaming, "ada", "space.created", count=1)  # stored directly
    assert (await space_check(streaming))["remaining"] == 2  # free: 3 spaces
    queued = [
        {"idempotency_key": f"w-{i % 2}", "customer": "ada", "type": "space.created"}
        for i in range(3)  # one repeats: it counts once
    ]
    response = await streaming.post("/v1/events", queued)
    assert response.json()["queued"] is True, response.text
    process = stream_tests.worker(streaming)
    try:
        await stream_tests.started(process)
        assert await stream_tests.wait_for(streaming, 3, 60) == 3
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
    assert await stored_row(streaming, "ada", "spaces") == "3"
    assert (await space_check(streaming))["remaining"] == 0
