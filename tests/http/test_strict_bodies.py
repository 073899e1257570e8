"""Strict bodies: authorization before the body, UTF-8 JSON without duplicate keys, NaN or
deep nesting, JSON's media type, and no text that a backend cannot store (decision 0022)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from billfold.entitlements.schemas import CheckIn
from billfold.http.bodies import MAX_DEPTH, _suspect, decode_json
from billfold.http.calls import permission_of
from billfold.metering.schemas import ConsumeIn
from billfold.tenants.scopes import GRANTED, Scope
from tests.conftest import Harness, assert_problem
from tests.http.test_authz import fill

pytestmark = pytest.mark.anyio

CHECK = "/v1/entitlements/check"
CONSUME = "/v1/entitlements/consume"
SUMMARY = "/v1/integrations/ai/usage-summary"
JSON = {"Content-Type": "application/json"}
MALFORMED = b'{"customer": "u1", "feature":'


def served_routes(routes: list[BaseRoute]) -> list[APIRoute]:
    """Every API route the app serves, the included routers' too."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        # FastAPI keeps an included router as one entry, around the router it includes.
        included = getattr(route, "original_router", route)
        found.extend(served_routes(list(getattr(included, "routes", []))))
    return found


def pointers(body: dict[str, Any]) -> set[str]:
    return {error["pointer"] for error in body.get("errors", []) if "pointer" in error}


async def post_raw(
    harness: Harness, path: str, raw: bytes, headers: dict[str, str] | None = None
) -> Any:
    return await harness.client.post(
        path, content=raw, headers={**harness.admin, **JSON, **(headers or {})}
    )


# Authentication and authorization come before the body.


async def test_no_route_lets_the_framework_read_its_body(harness: Harness) -> None:
    """FastAPI reads a body parameter before the route's dependencies run, so before
    `authorize`: every route reads its body itself (`read_json`), after it."""
    routes = served_routes(harness.app.routes)
    assert len(routes) > 20
    assert [route.path for route in routes if route.body_field is not None] == []


async def test_every_route_authenticates_and_authorizes_before_reading_the_body(
    harness: Harness,
) -> None:
    agent = await harness.key(Scope.AGENT)
    walked = 0
    for route in served_routes(harness.app.routes):
        permission = permission_of(route.dependant)
        if permission is None:
            continue
        for method in sorted(route.methods or ()):
            path = fill(route.path)
            where = f"{method} {route.path}"
            anonymous = await harness.client.request(method, path, content=MALFORMED, headers=JSON)
            assert anonymous.status_code == 401, f"{where}: {anonymous.text}"
            assert_problem(anonymous, 401, "unauthenticated")
            as_agent = await harness.client.request(
                method, path, content=MALFORMED, headers={**agent, **JSON}
            )
            if permission in GRANTED[Scope.AGENT]:
                assert as_agent.status_code not in (401, 403), f"{where}: {as_agent.text}"
                assert as_agent.status_code < 500, f"{where}: {as_agent.text}"
            elif permission.changes_state:
                assert_problem(as_agent, 403, "agent_forbidden")
            else:
                assert_problem(as_agent, 403, "insufficient_scope")
            walked += 1
    assert walked > 25


# JSON itself.


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ('{"customer": "u1", "feature": "spaces.max"}'.encode("utf-16"), "must be UTF-8"),
        ('{"customer": "u1", "feature": "spaces.max"}'.encode("utf-16-le"), "must be UTF-8"),
        ('{"customer": "u1", "feature": "spaces.max"}'.encode("utf-32"), "must be UTF-8"),
        (b'{"customer": "u\xe9", "feature": "spaces.max"}', "must be UTF-8"),
        (b'\xef\xbb\xbf{"customer": "u1", "feature": "spaces.max"}', "byte order mark"),
        (b'{"customer": "u1", "feature": "spaces.max", "customer": "u2"}', "appears twice"),
        (b'{"customer": "u1", "feature": "spaces.max", "current": NaN}', "NaN"),
        (b'{"customer": "u1", "feature": "spaces.max", "current": Infinity}', "Infinity"),
        (b'{"customer": "u1", "feature": "spaces.max", "current": -Infinity}', "Infinity"),
        (b'{"customer": "u1", "feature": "spaces.max", "x": ' + b"[" * 10_000, "nested"),
        (b'{"customer": "u1", "x": ' + b"[" * 300 + b"]" * 300 + b"}", "nested"),
    ],
)
@pytest.mark.parametrize("path", [CHECK, CONSUME, "/v1/customers/ada", "/v1/claims/redeem"])
async def test_bodies_must_be_strict_json(
    harness: Harness, path: str, raw: bytes, says: str
) -> None:
    method = "PUT" if path.startswith("/v1/customers") else "POST"
    response = await harness.client.request(
        method, path, content=raw, headers={**harness.admin, **JSON}
    )
    body = assert_problem(response, 400, "malformed_json")
    assert says in body["detail"], body
    assert pointers(body) == {"#"}


async def test_a_duplicate_key_deep_in_a_body_is_refused(harness: Harness) -> None:
    raw = b'{"name": "Ada", "metadata": {"plan": {"tier": 1, "tier": 2}}}'
    response = await harness.client.put(
        "/v1/customers/ada", content=raw, headers={**harness.admin, **JSON}
    )
    assert "appears twice" in assert_problem(response, 400, "malformed_json")["detail"]
    assert_problem(await harness.get("/v1/customers/ada"), 404, "customer_not_found")


async def test_colons_in_values_do_not_hide_a_duplicate_key(harness: Harness) -> None:
    raw = (
        b'{"customer": "ada", "feature": "ai.tokens", "idempotency_key": "a:b:c",'
        b' "amount": 1, "amount": 9000}'
    )
    assert_problem(await post_raw(harness, CONSUME, raw), 400, "malformed_json")


async def test_colons_and_the_word_nan_inside_strings_are_fine(harness: Harness) -> None:
    raw = json.dumps(
        {
            "customer": "ada",
            "feature": "ai.tokens",
            "idempotency_key": "NaN:Infinity:12:00",
            "properties": {"model": "a:b"},
        }
    ).encode()
    response = await post_raw(harness, CONSUME, raw)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=utf-16", None],
)
@pytest.mark.parametrize("path", [CHECK, CONSUME, SUMMARY, "/v1/customers/ada", "/v1/keys"])
async def test_json_routes_want_the_json_media_type(
    harness: Harness, path: str, content_type: str | None
) -> None:
    raw = json.dumps({"customer": "u1", "feature": "spaces.max"}).encode()
    headers = dict(harness.admin)
    if content_type is not None:
        headers["Content-Type"] = content_type
    method = "PUT" if path.startswith("/v1/customers") else "POST"
    response = await harness.client.request(method, path, content=raw, headers=headers)
    assert_problem(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
async def test_json_with_a_utf8_charset_is_json(harness: Harness, content_type: str) -> None:
    raw = json.dumps({"customer": "u1", "feature": "spaces.max", "current": 1}).encode()
    response = await post_raw(harness, CHECK, raw, {"Content-Type": content_type})
    assert response.status_code == 200, response.text


# Text no backend stores as sent.

NUL = "\\u0000"
SURROGATE = "\\ud800"


def raw_json(template: str, bad: str) -> bytes:
    """`template` with `<bad>` replaced by a JSON escape that json.dumps would not write."""
    return template.replace("<bad>", bad).encode()


TEXT_FIELDS = [
    ("PUT", "/v1/customers/ada", '{"name": "A<bad>da"}', "#/name"),
    ("PUT", "/v1/customers/ada", '{"email": "a<bad>@example.com"}', "#/email"),
    ("PUT", "/v1/customers/ada", '{"metadata": {"note": "x<bad>"}}', "#/metadata/note"),
    ("PUT", "/v1/customers/ada", '{"metadata": {"k<bad>": 1}}', "#/metadata/k<bad>"),
    ("PUT", "/v1/customers/ada", '{"metadata": {"a": ["ok", {"b": "<bad>"}]}}', "#/metadata/a/1/b"),
    (
        "POST",
        "/v1/customers/ada/grants",
        '{"plan": "pro", "metadata": {"n": "<bad>"}}',
        "#/metadata/n",
    ),
    ("POST", "/v1/customers/ada/grants", '{"feature": "rag.enabled", "value": "<bad>"}', "#/value"),
    ("POST", "/v1/customers/ada/grants", '{"feature": "x", "value": ["a", "<bad>"]}', "#/value/1"),
    (
        "POST",
        "/v1/customers/ada/subscriptions",
        '{"plan": "pro", "metadata": {"n": "<bad>"}}',
        "#/metadata/n",
    ),
    ("POST", "/v1/keys", '{"name": "key<bad>", "scope": "service"}', "#/name"),
    ("POST", "/v1/claims/redeem", '{"customer": "ada", "code": "AB<bad>CD"}', "#/code"),
    ("POST", "/v1/claims/revoke", '{"code": "AB<bad>CD"}', "#/code"),
    (
        "POST",
        "/v1/claims/batches",
        '{"plan": "pro", "count": 1, "duration": "30d", "campaign": "<bad>"}',
        "#/campaign",
    ),
    ("POST", CHECK, '{"customer": "ada", "feature": "spaces<bad>.max"}', "#/feature"),
    (
        "POST",
        CONSUME,
        '{"customer": "ada", "feature": "ai.tokens", "idempotency_key": "k<bad>"}',
        "#/idempotency_key",
    ),
    (
        "POST",
        CONSUME,
        '{"customer": "ada", "feature": "ai.tokens", "idempotency_key": "k",'
        ' "properties": {"model": "<bad>"}}',
        "#/properties/model",
    ),
    (
        "POST",
        SUMMARY,
        '{"customer": "ada", "chat_id": "c1", "workflow_id": "w<bad>", "sequence": 1,'
        ' "models": [{"model": "gpt-4o", "prompt_tokens": 1, "completion_tokens": 1}]}',
        "#/workflow_id",
    ),
]


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize(("method", "path", "template", "pointer"), TEXT_FIELDS)
async def test_text_a_backend_cannot_store_is_refused(
    harness: Harness, method: str, path: str, template: str, pointer: str | None, bad: str
) -> None:
    raw = raw_json(template, bad)
    response = await harness.client.request(
        method, path, content=raw, headers={**harness.admin, **JSON}
    )
    body = assert_problem(response, 422, "invalid_input")
    assert pointers(body) == {pointer.replace("<bad>", bad)}, body
    # Nothing of it was stored.
    assert_problem(await harness.get("/v1/customers/ada"), 404, "customer_not_found")


async def test_the_pointer_to_a_bad_key_is_sent_back_escaped(harness: Harness) -> None:
    raw = b'{"metadata": {"a\\ud800b": 1}}'
    response = await harness.client.put(
        "/v1/customers/ada", content=raw, headers={**harness.admin, **JSON}
    )
    body = assert_problem(response, 422, "invalid_input")
    assert pointers(body) == {"#/metadata/a\\ud800b"}


@pytest.mark.parametrize(
    ("method", "path", "template"),
    [
        ("PUT", "/v1/customers/ada", '{"metadata": {"n": <bad>}}'),
        ("PUT", "/v1/customers/ada", '{"metadata": {"n": {"deeper": [<bad>]}}}'),
        ("POST", "/v1/customers/ada/grants", '{"plan": "pro", "metadata": {"n": <bad>}}'),
        ("POST", "/v1/customers/ada/subscriptions", '{"plan": "pro", "metadata": {"n": <bad>}}'),
    ],
)
@pytest.mark.parametrize("bad", ["1e309", "-1e309", "1" * 400 + ".0"])
async def test_metadata_numbers_must_be_finite(
    harness: Harness, method: str, path: str, template: str, bad: str
) -> None:
    raw = raw_json(template, bad)
    response = await harness.client.request(
        method, path, content=raw, headers={**harness.admin, **JSON}
    )
    body = assert_problem(response, 422, "invalid_input")
    assert "finite" in json.dumps(body), body
    assert_problem(await harness.get("/v1/customers/ada"), 404, "customer_not_found")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_metadata_refuses_nan_and_infinity(harness: Harness, literal: str) -> None:
    raw = raw_json('{"metadata": {"n": <bad>}}', literal)
    response = await harness.client.put(
        "/v1/customers/ada", content=raw, headers={**harness.admin, **JSON}
    )
    assert_problem(response, 400, "malformed_json")
    assert_problem(await harness.get("/v1/customers/ada"), 404, "customer_not_found")


async def test_good_text_and_metadata_round_trip(harness: Harness) -> None:
    metadata = {"note": "naïve ☃ 😀", "n": 1.5, "big": 10**30, "list": [None, True, "x:y"]}
    response = await harness.client.put(
        "/v1/customers/ada",
        json={"name": "Åda 😀", "email": "ada@example.com", "metadata": metadata},
        headers=harness.admin,
    )
    assert response.status_code == 201, response.text
    fetched = (await harness.get("/v1/customers/ada")).json()
    assert fetched["name"] == "Åda 😀"
    assert fetched["metadata"] == metadata


# The decoder on its own.


def test_decode_json_refuses_what_read_json_refuses() -> None:
    assert decode_json(b'{"a": [1, {"b": "c"}]}') == {"a": [1, {"b": "c"}]}
    nested = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert decode_json(nested) is not None
    for raw in (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), b"[" * 100_000):
        with pytest.raises(Exception, match="nested more than"):
            decode_json(raw)


@pytest.mark.parametrize(
    "body",
    [
        {"customer": "ada-12345", "feature": "spaces.max", "current": 3},
        {"customer": "ada", "feature": "share.enabled"},
        {"customer": "ada", "feature": "ai.tokens", "amount": "12.5", "idempotency_key": "k-1"},
        {"customer": "ada", "feature": "ai.tokens", "idempotency_key": "k", "properties": {"m": 1}},
    ],
)
def test_usual_hot_bodies_are_parsed_once(body: dict[str, Any]) -> None:
    """The check and consume routes pay for the strict second reading (`decode_json`)
    only when a cheap test on the raw bytes says it could find something: their usual
    bodies never take it. (Measured: the cheap test costs well under a microsecond.)"""
    raw = json.dumps(body).encode()
    model = ConsumeIn if "idempotency_key" in body else CheckIn
    assert not _suspect(raw, model.model_validate_json(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b'{"customer": "ada", "feature": "share.enabled", "feature": "share.enabled"}',
        b'{"customer": "a:b", "feature": "share.enabled", "feature": "spaces.max"}',
        b'{"customer": "a\\u0000", "feature": "share.enabled"}',
    ],
)
def test_what_could_hide_a_fault_takes_the_second_reading(raw: bytes) -> None:
    assert _suspect(raw, CheckIn.model_validate_json(raw))


def test_a_model_that_could_hold_nan_looks_for_it() -> None:
    raw = b'{"customer": "ada", "feature": "ai.tokens", "idempotency_key": "NaN"}'
    assert _suspect(raw, ConsumeIn.model_validate_json(raw))


# Strict scalars.


@pytest.mark.parametrize(
    "amount", [" 1", "1 ", "1_000", "+5", "5.", ".5", "0x10", "abc", "NaN", "", True, [1], "1e400"]
)
async def test_amounts_are_numbers_or_decimal_strings_only(harness: Harness, amount: Any) -> None:
    body = {"customer": "ada", "feature": "ai.tokens", "idempotency_key": "k", "amount": amount}
    response = await harness.post(CONSUME, body)
    assert pointers(assert_problem(response, 422, "invalid_input")) == {"#/amount"}


async def test_an_amount_too_large_for_a_float_is_refused(harness: Harness) -> None:
    raw = b'{"customer": "ada", "feature": "ai.tokens", "idempotency_key": "k", "amount": 1e309}'
    response = await post_raw(harness, CONSUME, raw)
    assert pointers(assert_problem(response, 422, "invalid_input")) == {"#/amount"}


@pytest.mark.parametrize(
    ("amount", "recorded"),
    [("12.5", "12.5"), (12.5, "12.5"), (3, "3"), ("1e3", "1000"), ("0.000001", "0.000001")],
)
async def test_good_amounts_are_taken_exactly(harness: Harness, amount: Any, recorded: str) -> None:
    body = {"customer": "ada", "feature": "ai.tokens", "idempotency_key": "k", "amount": amount}
    response = await harness.post(CONSUME, body)
    assert response.status_code == 200, response.text
    assert response.json()["amount"] == recorded


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/audit/events?since=1780000000", "since"),
        ("/v1/audit/events?until=1780000000.5", "until"),
        ("/v1/customers/ada/entitlements?at=1780000000", "at"),
        ("/v1/customers/ada/usage?meter=ai_tokens&from=1780000000", "from"),
        ("/v1/customers/ada/usage/ai?to=1780000000", "to"),
        ("/v1/audit/events?since=2026-06-01", "since"),
    ],
)
async def test_query_instants_are_iso_8601_with_a_zone(
    harness: Harness, path: str, parameter: str
) -> None:
    body = assert_problem(await harness.get(path), 422, "invalid_input")
    assert {e["parameter"] for e in body["errors"]} == {parameter}, body


async def test_iso_8601_query_instants_are_read(harness: Harness) -> None:
    for path in (
        "/v1/audit/events?since=2026-06-01T00:00:00Z&until=2026-06-02T00:00:00%2B02:00",
        "/v1/customers/ada/entitlements?at=2026-06-01T12:00:00Z",
        "/v1/customers/ada/usage/ai?from=2026-06-01T00:00:00Z&to=2026-07-01T00:00:00Z",
    ):
        response = await harness.get(path)
        assert response.status_code == 200, (path, response.text)


async def test_body_instants_are_not_unix_seconds(harness: Harness) -> None:
    for value in ("1780000000", "2026-07-01"):
        response = await harness.post("/v1/customers/ada/grants", {"plan": "pro", "ends_at": value})
        assert pointers(assert_problem(response, 422, "invalid_input")) == {"#/ends_at"}
