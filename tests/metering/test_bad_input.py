"""Bad input in metering: each bad event is refused on its own, with a reason, and never
stored wrong; its neighbours are stored; a key sent again with another body is refused
(docs/decisions/0023)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import httpx
import pytest
import yaml

from billfold.catalog import catalog as catalog_reader
from billfold.catalog import plansfile
from billfold.catalog.meters import Aggregation
from billfold.kit.context import Actor, Context
from billfold.metering import events as usage_events
from billfold.metering.events import UsageEvent
from billfold.metering.ingest import ingest
from billfold.metering.stream import _event_json, _event_of
from tests.conftest import PLANS, Harness, assert_problem, new_harness, postgresql_only
from tests.factories import quota_usage

pytestmark = pytest.mark.anyio

EVENTS = "/v1/events"
CONSUME = "/v1/entitlements/consume"
SUMMARY = "/v1/integrations/ai/usage-summary"
CE = "application/cloudevents+json"
WEEK = timedelta(days=7)


def event(key: str, tokens: Any = 10, **fields: Any) -> dict[str, Any]:
    properties = fields.pop("properties", {"tokens": tokens, "model": "gpt-4o"})
    return {
        "idempotency_key": key,
        "customer": "ada",
        "type": "ai.tokens",
        **fields,
        "properties": properties,
    }


async def send(harness: Harness, body: Any, media_type: str = "application/json") -> Any:
    """Post `body` as JSON text; a string "RAW:<text>" goes in as that JSON text, so a
    test can send what Python's json would not write (1e309)."""
    content = json.dumps(body)  # ensure_ascii: a lone surrogate goes as "\ud800"
    content = content.replace('"RAW:1e309"', "1e309").replace('"RAW:-1e309"', "-1e309")
    return await harness.client.post(
        EVENTS, content=content, headers={**harness.admin, "Content-Type": media_type}
    )


async def usage_of(harness: Harness, customer: str = "ada") -> httpx.Response:
    return await harness.get(f"/v1/customers/{customer}/usage", params={"meter": "ai_tokens"})


def statuses(answer: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(r["status"], r["code"]) for r in answer["results"]]


POISONED = {
    "key with a NUL": event("bad\x00key"),
    "key with a lone surrogate": event("bad\ud800key"),
    "customer with a lone surrogate": event("k-customer", customer="ad\udfffa"),
    "service with a NUL": event("k-service", service="ai\x00runtime"),
    "correlation id with a lone surrogate": event("k-correlation", correlation_id="r\ud83d"),
    "property value with a NUL": event("k-value", properties={"tokens": 1, "model": "gpt\x00"}),
    "property value with a lone surrogate": event(
        "k-value-2", properties={"tokens": 1, "model": "\udc00"}
    ),
    "property key with a NUL": event("k-key", properties={"tokens": 1, "mo\x00del": "x"}),
    "property key with a lone surrogate": event("k-key-2", properties={"tokens": 1, "\ud800": 1}),
    "nested value with a NUL": event(
        "k-nested", properties={"tokens": 1, "meta": {"tags": ["ok", "n\x00"]}}
    ),
    "NaN": event("k-nan", properties={"tokens": 1, "score": float("nan")}),
    "Infinity": event("k-inf", properties={"tokens": 1, "score": float("inf")}),
    "1e309": event("k-big", properties={"tokens": 1, "score": "RAW:1e309"}),
    "-1e309": event("k-small", properties={"tokens": 1, "score": "RAW:-1e309"}),
}


async def test_poisoned_text_and_numbers_reject_only_their_own_event(harness: Harness) -> None:
    batch = [event("good-1", tokens=10), *POISONED.values(), event("good-2", tokens=5)]
    response = await send(harness, batch)
    assert response.status_code == 200, response.text  # was a 500 for the whole batch
    answer = response.json()
    assert (answer["accepted"], answer["rejected"]) == (2, len(POISONED))
    results = answer["results"]
    assert results[0]["status"] == results[-1]["status"] == "accepted"
    for (name, _body), result in zip(POISONED.items(), results[1:-1], strict=True):
        assert (result["status"], result["code"]) == ("rejected", "invalid_event"), name
        assert result["reason"], name
    reasons = [r["reason"] for r in results[1:-1]]
    assert "NUL" in reasons[0]
    assert "surrogate" in reasons[1]
    assert results[1]["idempotency_key"] is None  # a key that cannot be stored is not echoed
    assert results[3]["idempotency_key"] == "k-customer"
    assert "not a finite number" in reasons[-1]
    # Only the good events were stored, and usage reads still answer.
    read = await usage_of(harness)
    assert read.status_code == 200, read.text
    assert [b["value"] for b in read.json()["buckets"]] == ["15"]


async def test_a_poisoned_cloudevent_id_is_refused_without_echoing_it(harness: Harness) -> None:
    cloud = {
        "specversion": "1.0",
        "id": "ce\ud800",
        "source": "ai-runtime",
        "subject": "ada",
        "type": "ai.tokens",
        "data": {"tokens": 3},
    }
    response = await send(harness, cloud, CE)
    body = assert_problem(response, 422, "events_rejected")
    assert body["results"][0]["idempotency_key"] is None
    assert "surrogate" in body["results"][0]["reason"]


METERED_BAD = {
    "a word": "abc",
    "true": True,
    "an object": {"value": 1},
    "a list": [1],
    "null": None,
    "a leading space": " 1",
    "an underscore": "1_000",
    "a plus sign": "+5",
    "an exponent past 28 digits": "1e28",
    "an exponent with a plus sign": "+1e3",
    "a trailing point": "5.",
    "a leading zero": "05",
    "too many digits": "1" * 29,
    "a negative number": -5,
    "a negative decimal string": "-0.5",
}


async def test_a_metered_property_must_be_a_number_and_reads_keep_answering(
    harness: Harness,
) -> None:
    batch = [
        event("n-1", tokens=10),
        *(event(f"bad-{i}", tokens=value) for i, value in enumerate(METERED_BAD.values())),
        event("n-2", tokens="12.5"),  # a decimal string is a number
        event("n-3", properties={"model": "gpt-4o"}),  # absent: it adds nothing
        event("n-4", tokens=2.5),
    ]
    response = await send(harness, batch)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert statuses(answer) == [
        ("accepted", None),
        *[("rejected", "invalid_event")] * len(METERED_BAD),
        ("accepted", None),
        ("accepted", None),
        ("accepted", None),
    ]
    reasons = [r["reason"] for r in answer["results"][1 : 1 + len(METERED_BAD)]]
    for name, reason in zip(METERED_BAD, reasons, strict=True):
        assert reason.startswith("properties.tokens: meter 'ai_tokens'"), (name, reason)
    assert "negative" in reasons[-1]
    read = await usage_of(harness)
    assert read.status_code == 200, read.text  # was 409 meter_value_not_a_number for good
    assert [b["value"] for b in read.json()["buckets"]] == ["25"]
    # The decimal string drew from the quota like the numbers did.
    assert (await quota_usage(harness))["used"] == "25"


def _with_refund_meter(allow_negative: bool) -> str:
    document = yaml.safe_load(PLANS.read_text())
    meter: dict[str, Any] = {"event": "credit.moved", "aggregation": "sum", "property": "amount"}
    if allow_negative:
        meter["allow_negative"] = True
    document["meters"]["credits"] = meter
    return str(yaml.safe_dump(document))


async def test_a_sum_meter_takes_negative_values_only_when_it_allows_them(
    harness: Harness,
) -> None:
    for allow, expected in ((False, ("rejected", "invalid_event")), (True, ("accepted", None))):
        await harness.apply_plans(_with_refund_meter(allow))
        key = f"credit-{allow}"
        body = {
            "idempotency_key": key,
            "customer": "ada",
            "type": "credit.moved",
            "properties": {"amount": "-2.5"},
        }
        answer = await send(harness, [body, {**body, "idempotency_key": f"{key}-up"}])
        assert answer.status_code in (200, 422), answer.text
        outcome = answer.json()["results"][0]
        assert (outcome["status"], outcome["code"]) == expected, outcome
    read = await harness.get("/v1/customers/ada/usage", params={"meter": "credits"})
    assert read.status_code == 200, read.text
    assert read.json()["meter"]["allow_negative"] is True
    # Only the batch sent once the meter allowed negative values was stored: 2 x -2.5.
    assert [b["value"] for b in read.json()["buckets"]] == ["-5"]


def test_plans_validate_allows_allow_negative_on_sum_meters_only() -> None:
    document = yaml.safe_load(_with_refund_meter(True))
    assert plansfile.parse(yaml.safe_dump(document)).meters["credits"].allow_negative
    document["meters"]["credits"]["aggregation"] = "max"
    with pytest.raises(plansfile.PlansFileError) as refused:
        plansfile.parse(yaml.safe_dump(document))
    assert "meters.credits.allow_negative: only a sum meter takes negative values" in str(
        refused.value
    )
    document["meters"]["credits"] = {
        "event": "credit.moved",
        "aggregation": Aggregation.SUM.value,
        "property": "amount",
        "allow_negative": "yes",
    }
    with pytest.raises(plansfile.PlansFileError) as refused:
        plansfile.parse(yaml.safe_dump(document))
    assert "meters.credits.allow_negative: expected true or false" in str(refused.value)


# Idempotency: the same key with another body.


async def test_an_event_sent_again_with_another_body_is_refused(harness: Harness) -> None:
    first = await send(harness, event("same", tokens=5, correlation_id="r-1"))
    assert statuses(first.json()) == [("accepted", None)]
    # The same event is a duplicate: its properties in another order, another correlation
    # id (a trace of the request, not what happened), or as a CloudEvent.
    again = event("same", correlation_id="r-2", properties={"model": "gpt-4o", "tokens": 5})
    assert statuses((await send(harness, again)).json()) == [("duplicate", None)]
    other = await send(harness, event("same", tokens=6))
    body = assert_problem(other, 422, "events_rejected")
    assert [(r["status"], r["code"]) for r in body["results"]] == [
        ("rejected", "idempotency_key_reused")
    ]
    # Within one batch: the first body wins, the same body is a duplicate.
    batch = [event("b-1", tokens=1), event("b-1", tokens=1), event("b-1", tokens=2)]
    assert statuses((await send(harness, batch)).json()) == [
        ("accepted", None),
        ("duplicate", None),
        ("rejected", "idempotency_key_reused"),
    ]
    assert [b["value"] for b in (await usage_of(harness)).json()["buckets"]] == ["6"]


async def test_the_stream_workers_insert_tells_a_retry_from_another_body(
    harness: Harness,
) -> None:
    """The NATS worker stores events read back from the stream (without the digest the
    API took) through the same insert: a retry is a duplicate, another body refused."""
    first = await send(harness, event("w-1", tokens=7))
    assert statuses(first.json()) == [("accepted", None)]
    now = harness.clock.now()

    def via_stream(item: dict[str, Any]) -> UsageEvent:
        checked = usage_events.check(item, usage_events.JSON_TYPE, now, WEEK, WEEK)
        assert isinstance(checked, UsageEvent)
        return _event_of(json.loads(json.dumps(_event_json(checked), default=str)))

    ctx = Context(harness.tenant_id, Actor("system", "worker ingest", None), "ingest", now)
    async with harness.database.transaction() as session:
        catalog = await catalog_reader.current(session, harness.tenant_id)
        outcomes, _overages = await ingest(
            session,
            ctx,
            catalog,
            [
                via_stream(event("w-1", tokens=7, properties={"model": "gpt-4o", "tokens": 7})),
                via_stream(event("w-1", tokens=8)),  # the same key again, another body
            ],
            late_window=WEEK,
        )
    assert [(o.status, o.code) for o in outcomes] == [
        ("duplicate", None),
        ("rejected", "idempotency_key_reused"),
    ]
    async with harness.database.transaction() as session:
        outcomes, _overages = await ingest(
            session, ctx, catalog, [via_stream(event("w-1", tokens=8))], late_window=WEEK
        )
    assert [(o.status, o.code) for o in outcomes] == [("rejected", "idempotency_key_reused")]
    assert [b["value"] for b in (await usage_of(harness)).json()["buckets"]] == ["7"]


async def consume(harness: Harness, key: str, amount: Any = 40, **extra: Any) -> httpx.Response:
    body = {"customer": "ada", "feature": "ai.tokens", "amount": amount, "idempotency_key": key}
    return await harness.post(CONSUME, {**body, **extra})


async def test_a_consume_sent_again_with_another_amount_is_refused(harness: Harness) -> None:
    first = await consume(harness, "c-1", 40)
    assert first.status_code == 200, first.text
    assert first.json()["replayed"] is False
    replay = await consume(harness, "c-1", "40.0")  # the same amount, spelled otherwise
    assert replay.status_code == 200, replay.text
    assert (replay.json()["replayed"], replay.json()["amount"]) == (True, "40")
    assert_problem(await consume(harness, "c-1", 41), 422, "idempotency_key_reused")
    other = await consume(harness, "c-1", 40, properties={"model": "o3"})
    assert_problem(other, 422, "idempotency_key_reused")
    # A key a reported event holds is another request too, even for the same customer.
    await send(harness, event("e-1", tokens=40))
    assert_problem(await consume(harness, "e-1", 40), 422, "idempotency_key_reused")
    # ... unless that event holds just the usage the consume would record.
    await send(harness, event("e-2", properties={"tokens": 40}))
    same = await consume(harness, "e-2", 40)
    assert same.status_code == 200, same.text
    assert same.json()["replayed"] is True
    assert (await quota_usage(harness))["used"] == "120"


async def test_concurrent_consumes_of_one_key_with_other_amounts_draw_once(
    harness: Harness,
) -> None:
    answers = await asyncio.gather(*(consume(harness, "race", 10 + i) for i in range(12)))
    fresh = [a for a in answers if a.status_code == 200 and not a.json()["replayed"]]
    assert len(fresh) == 1, [a.text for a in answers]
    for answer in answers:
        if answer is not fresh[0]:
            assert_problem(answer, 422, "idempotency_key_reused")
    assert (await quota_usage(harness))["used"] == fresh[0].json()["amount"]


@postgresql_only  # two processes' batchers racing on one key: SQLite serialises writers
async def test_consumes_of_one_key_race_across_processes_and_one_wins(
    harness: Harness,
) -> None:
    other = await new_harness(harness.settings.database_url)
    try:
        # The second app answers for the first one's tenant: the same key, two processes.
        calls = [
            (harness if i % 2 else other).client.post(
                CONSUME,
                json={
                    "customer": "ada",
                    "feature": "ai.tokens",
                    "amount": 10 + i,
                    "idempotency_key": "cross",
                },
                headers=harness.admin,
            )
            for i in range(16)
        ]
        answers = await asyncio.gather(*calls)
    finally:
        await other.client.aclose()
        await other.database.dispose()
    fresh = [a for a in answers if a.status_code == 200 and not a.json()["replayed"]]
    assert len(fresh) == 1, [a.text for a in answers]
    assert all(a is fresh[0] or a.json()["code"] == "idempotency_key_reused" for a in answers), [
        a.text for a in answers
    ]


async def test_concurrent_events_of_one_key_with_other_bodies_store_one(
    harness: Harness,
) -> None:
    answers = await asyncio.gather(
        *(send(harness, event("race-e", tokens=1 + i)) for i in range(12))
    )
    outcomes = [a.json()["results"][0] for a in answers]
    accepted = [o for o in outcomes if o["status"] == "accepted"]
    assert len(accepted) == 1, outcomes
    assert all(o is accepted[0] or o["code"] == "idempotency_key_reused" for o in outcomes)
    read = (await usage_of(harness)).json()
    assert len(read["buckets"]) == 1
    assert read["buckets"][0]["events"] == 1


# Consume and the AI usage summary refuse text no backend stores as sent.


async def test_consume_refuses_a_nul_in_any_text(harness: Harness) -> None:
    for extra in (
        {"idempotency_key": "k\x00"},
        {"properties": {"model": "gpt\x00"}},
        {"properties": {"mo\x00del": "x"}},
        {"customer": "a\x00da"},
    ):
        body = {"customer": "ada", "feature": "ai.tokens", "amount": 1, "idempotency_key": "k"}
        response = await harness.post(CONSUME, {**body, **extra})
        assert_problem(response, 422, "invalid_input")
    assert (await quota_usage(harness))["used"] == "0"


async def test_the_ai_usage_summary_refuses_a_nul_in_any_text(harness: Harness) -> None:
    summary = {
        "customer": "ada",
        "chat_id": "chat-1",
        "workflow_id": "support",
        "sequence": 1,
        "models": [{"model": "gpt-4o", "prompt_tokens": 3, "completion_tokens": 4}],
    }
    for extra in ({"workflow_id": "sup\x00port"}, {"correlation_id": "\x00"}):
        assert_problem(await harness.post(SUMMARY, {**summary, **extra}), 422, "invalid_input")
    assert (await harness.post(SUMMARY, summary)).status_code == 200


@postgresql_only  # the stream is the platform setup, tested on PostgreSQL (see test_ingest_stream)
async def test_nothing_poisoned_is_queued_on_the_stream(
    streaming: Harness,
    nats_url: str,
) -> None:
    import nats

    batch = [event("q-good-1"), *POISONED.values(), event("q-good-2")]
    response = await send(streaming, batch)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["queued"], answer["accepted"], answer["rejected"]) == (True, 2, len(POISONED))
    stream = streaming.settings.ingest_stream
    client = await nats.connect(nats_url)
    try:
        subscription = await client.jetstream().pull_subscribe(
            f"billfold.usage.{stream.lower()}.>", durable="probe", stream=stream
        )
        messages = await subscription.fetch(10, timeout=5)
    finally:
        await client.close()
    queued = [e["idempotency_key"] for m in messages for e in json.loads(m.data)["events"]]
    assert queued == ["q-good-1", "q-good-2"]


async def test_a_reused_consume_key_is_the_same_problem_as_a_reused_header(
    harness: Harness,
) -> None:
    """One `idempotency_key_reused` problem, whichever key was reused (one class in kit)."""
    assert (await consume(harness, "c-title", 40)).status_code == 200
    body = assert_problem(await consume(harness, "c-title", 41), 422, "idempotency_key_reused")
    headers = {**harness.admin, "Idempotency-Key": "grant-title-1"}
    path = "/v1/customers/ada/grants"
    first = await harness.post(path, {"feature": "spaces.max", "value": 12}, headers=headers)
    assert first.status_code == 201, first.text
    other = await harness.post(path, {"feature": "spaces.max", "value": 13}, headers=headers)
    header = assert_problem(other, 422, "idempotency_key_reused")
    assert (body["title"], body["type"]) == (header["title"], header["type"])


async def test_a_metered_decimal_string_follows_the_one_rule(harness: Harness) -> None:
    """The rule consume's amount follows (kit.schemas.DECIMAL_STRING): an exponent is fine."""
    batch = [event("x-1", tokens="1e3"), event("x-2", tokens="2.5E-1"), event("x-3", tokens="1E+1")]
    response = await send(harness, batch)
    assert response.status_code == 200, response.text
    assert statuses(response.json()) == [("accepted", None)] * 3
    read = await usage_of(harness)
    assert [b["value"] for b in read.json()["buckets"]] == ["1010.25"]
    consumed = await consume(harness, "x-4", "1e1")
    assert (consumed.status_code, consumed.json()["amount"]) == (200, "10"), consumed.text
