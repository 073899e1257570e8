"""Every error is RFC 9457 problem+json with a stable code; refusals are never 500s."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import Request, Response

from billfold.app import create_app
from billfold.http.calls import AdminCall, ReadCall, short_path, short_paths
from billfold.kit.invariants import InvariantViolation
from tests.conftest import Harness, assert_problem

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
CHECK = "/v1/entitlements/check"
MIB = 1024 * 1024
WELL_FORMED_GRANT = "grt_abcdefghijklmnopqrstuvwxyz"


def field_errors(body: dict[str, Any]) -> list[dict[str, str]]:
    errors = body.get("errors")
    assert isinstance(errors, list), body
    assert errors, body
    for error in errors:
        assert error["detail"], error
        assert ("pointer" in error) != ("parameter" in error), error
    return errors


def pointers(body: dict[str, Any]) -> dict[str, str]:
    return {e["pointer"]: e["detail"] for e in field_errors(body) if "pointer" in e}


def parameters(body: dict[str, Any]) -> dict[str, str]:
    return {e["parameter"]: e["detail"] for e in field_errors(body) if "parameter" in e}


# The framework's own errors.


async def test_unknown_route_is_a_problem(harness: Harness) -> None:
    for path in ("/v1/nothing-here", "/nope", "/v1/customers/a/b/c/d"):
        assert_problem(await harness.get(path), 404, "route_not_found")
    # Even without a key: the route does not exist, whoever asks.
    assert_problem(await harness.client.get("/v1/nothing-here"), 404, "route_not_found")


async def test_wrong_method_is_a_problem(harness: Harness) -> None:
    response = await harness.client.delete("/v1/catalog", headers=harness.admin)
    assert_problem(response, 405, "method_not_allowed")
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "POST"}
    response = await harness.client.put(CHECK, json={}, headers=harness.admin)
    assert_problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]


# Bodies.


@pytest.mark.parametrize(
    "raw", [b'{"customer": "u1", "feature":', b"not json", b"{'customer': 'u1'}", b"\xff\xfe"]
)
async def test_malformed_json_is_400(harness: Harness, raw: bytes) -> None:
    headers = {**harness.admin, "Content-Type": "application/json"}
    response = await harness.client.post(CHECK, content=raw, headers=headers)
    body = assert_problem(response, 400, "malformed_json")
    assert pointers(body) == {"#": pointers(body)["#"]}


async def test_strings_are_not_coerced_to_numbers(harness: Harness) -> None:
    response = await harness.post(
        CHECK, {"customer": "u1", "feature": "spaces.max", "current": "3"}
    )
    body = assert_problem(response, 422, "invalid_input")
    assert list(pointers(body)) == ["#/current"]


@pytest.mark.parametrize(
    ("payload", "pointer"),
    [
        ({"customer": 1, "feature": "spaces.max"}, "#/customer"),
        ({"customer": "u1", "feature": "spaces.max", "current": True}, "#/current"),
        ({"customer": "u1", "feature": "spaces.max", "current": 2.5}, "#/current"),
        ({"customer": "u1", "feature": "spaces.max", "current": -1}, "#/current"),
        ({"customer": "u1", "feature": ["spaces.max"]}, "#/feature"),
        ({"customer": "", "feature": "spaces.max"}, "#/customer"),
    ],
)
async def test_wrong_types_point_at_the_field(
    harness: Harness, payload: dict[str, Any], pointer: str
) -> None:
    body = assert_problem(await harness.post(CHECK, payload), 422, "invalid_input")
    assert set(pointers(body)) == {pointer}


async def test_body_that_is_not_an_object(harness: Harness) -> None:
    for payload in ([], "customer", 3):
        body = assert_problem(await harness.post(CHECK, payload), 422, "invalid_input")
        assert set(pointers(body)) == {"#"}


async def test_unknown_field_is_refused(harness: Harness) -> None:
    response = await harness.post(
        CHECK, {"customer": "u1", "feature": "share.enabled", "colour": "red"}
    )
    body = assert_problem(response, 422, "invalid_input")
    assert pointers(body) == {"#/colour": "unknown field"}


async def test_unknown_nested_pointer_is_escaped(harness: Harness) -> None:
    response = await harness.post(CHECK, {"customer": "u1", "feature": "share.enabled", "a/b~c": 1})
    body = assert_problem(response, 422, "invalid_input")
    assert pointers(body) == {"#/a~1b~0c": "unknown field"}


async def test_missing_field_points_at_it(harness: Harness) -> None:
    body = assert_problem(await harness.post(CHECK, {"customer": "u1"}), 422, "invalid_input")
    assert pointers(body) == {"#/feature": "required"}
    body = assert_problem(await harness.post(CHECK, {}), 422, "invalid_input")
    assert pointers(body) == {"#/customer": "required", "#/feature": "required"}


async def test_missing_body_is_refused(harness: Harness) -> None:
    response = await harness.client.post(CHECK, headers=harness.admin)
    body = assert_problem(response, 422, "invalid_input")
    assert set(pointers(body)) == {"#"}


async def test_naive_datetime_is_refused_not_500(harness: Harness) -> None:
    response = await harness.post(
        "/v1/customers/dt-user/grants", {"plan": "pro", "ends_at": "2026-07-01T00:00:00"}
    )
    body = assert_problem(response, 422, "invalid_input")
    assert set(pointers(body)) == {"#/ends_at"}
    # Nothing was granted: the customer was not even created.
    assert_problem(await harness.get("/v1/customers/dt-user"), 404, "customer_not_found")


async def test_aware_datetime_is_accepted_and_answered_as_stored(harness: Harness) -> None:
    response = await harness.post(
        "/v1/customers/dt-user/grants", {"plan": "pro", "ends_at": "2026-07-01T00:00:00+02:00"}
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert datetime.fromisoformat(created["ends_at"]) == datetime(2026, 6, 30, 22, tzinfo=UTC)
    # The answer to the write is the same document a later read gives.
    fetched = await harness.get(f"/v1/grants/{created['id']}")
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == created


async def test_malformed_datetime_is_refused(harness: Harness) -> None:
    for value in ("next tuesday", "2026-13-01T00:00:00Z", 1_780_000_000):
        response = await harness.post(
            "/v1/customers/dt-user/grants", {"plan": "pro", "ends_at": value}
        )
        body = assert_problem(response, 422, "invalid_input")
        assert set(pointers(body)) == {"#/ends_at"}, value


# Size limits.


def oversized_check() -> bytes:
    padding = "x" * (2 * MIB)
    return json.dumps({"customer": "u1", "feature": "spaces.max", "pad": padding}).encode()


@pytest.mark.parametrize("path", [CHECK, "/v1/catalog"])
async def test_oversized_body_with_length_is_413(harness: Harness, path: str) -> None:
    raw = oversized_check()
    assert len(raw) > harness.settings.max_body_bytes
    headers = {**harness.admin, "Content-Type": "application/json"}
    response = await harness.client.post(path, content=raw, headers=headers)
    assert response.request.headers["content-length"] == str(len(raw))
    assert_problem(response, 413, "payload_too_large")


@pytest.mark.parametrize("path", [CHECK, "/v1/catalog"])
async def test_oversized_chunked_body_is_413(harness: Harness, path: str) -> None:
    chunk = b" " * (64 * 1024)

    async def stream() -> AsyncIterator[bytes]:
        yield b'{"customer": "u1", "feature": "spaces.max", "pad": "'
        for _ in range(32):  # 2 MiB in 64 KiB chunks
            yield chunk
        yield b'"}'

    headers = {**harness.admin, "Content-Type": "application/json"}
    response = await harness.client.post(path, content=stream(), headers=headers)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_problem(response, 413, "payload_too_large")


async def test_body_at_the_limit_is_read(harness: Harness) -> None:
    payload = {"customer": "u1", "feature": "spaces.max", "current": 1}
    raw = json.dumps(payload).encode()
    raw += b" " * (harness.settings.max_body_bytes - len(raw))
    headers = {**harness.admin, "Content-Type": "application/json"}
    response = await harness.client.post(CHECK, content=raw, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["allowed"] is True


# Path and query parameters.


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/grants/not-an-id", "grant_id"),
        ("/v1/grants/GRT_ABCDEFGHIJKLMNOPQRSTUVWXYZ", "grant_id"),
        ("/v1/grants/grt_abc", "grant_id"),
        ("/v1/subscriptions/sub_0000000000000000000000000a", "subscription_id"),
        ("/v1/customers/u1/grants?state=sometimes", "state"),
        ("/v1/customers?limit=0", "limit"),
        ("/v1/customers?limit=many", "limit"),
        ("/v1/customers?cursor=__8", "cursor"),
        ("/v1/audit/events?cursor=YWJj", "cursor"),
        ("/v1/audit/events?since=yesterday", "since"),
        ("/v1/audit/events?since=2026-06-01T00:00:00", "since"),
        ("/v1/customers/u1/entitlements?at=2026-06-01T00:00:00", "at"),
    ],
)
async def test_bad_parameters_are_422_with_a_parameter(
    harness: Harness, path: str, parameter: str
) -> None:
    body = assert_problem(await harness.get(path), 422, "invalid_input")
    assert set(parameters(body)) == {parameter}


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/v1/grants/not-an-id/revoke", "grant_id"),
        ("/v1/keys/nope/revoke", "key_id"),
        ("/v1/subscriptions/sub_x/cancel", "subscription_id"),
        ("/v1/claims/batches/..%20/revoke", "batch_id"),
    ],
)
async def test_bad_ids_in_mutating_paths_are_422(
    harness: Harness, path: str, parameter: str
) -> None:
    body = assert_problem(await harness.post(path), 422, "invalid_input")
    assert set(parameters(body)) == {parameter}


@pytest.mark.parametrize("customer", ["with space", "tab\there", "a?b", "50%"])
async def test_customer_ids_that_cannot_round_trip_are_refused(
    harness: Harness, customer: str
) -> None:
    quoted = "/v1/customers/" + quote(customer, safe="")
    for response in (
        await harness.get(quoted),
        await harness.client.put(quoted, json={}, headers=harness.admin),
        await harness.get(f"{quoted}/entitlements"),
    ):
        body = assert_problem(response, 422, "invalid_input")
        assert set(parameters(body)) == {"external_id"}, body
    body = assert_problem(
        await harness.post(CHECK, {"customer": customer, "feature": "share.enabled"}),
        422,
        "invalid_input",
    )
    assert set(pointers(body)) == {"#/customer"}


async def test_customer_id_with_a_slash_is_refused(harness: Harness) -> None:
    body = assert_problem(
        await harness.post(CHECK, {"customer": "team/alice", "feature": "share.enabled"}),
        422,
        "invalid_input",
    )
    assert set(pointers(body)) == {"#/customer"}
    body = assert_problem(
        await harness.post("/v1/claims/redeem", {"customer": "team/alice", "code": "ABCD"}),
        422,
        "invalid_input",
    )
    assert set(pointers(body)) == {"#/customer"}
    # In a path, an escaped slash is not a customer id: the route does not exist.
    response = await harness.client.put(
        "/v1/customers/team%2Falice", json={}, headers=harness.admin
    )
    assert_problem(response, 404, "route_not_found")
    listed = await harness.get("/v1/customers")
    assert listed.json()["customers"] == []


async def test_customer_filter_names_its_parameter(harness: Harness) -> None:
    body = assert_problem(
        await harness.get("/v1/audit/events?customer=a%20b"), 422, "invalid_input"
    )
    assert set(parameters(body)) == {"customer"}


# The check API.


async def test_check_unknown_feature_is_404(harness: Harness) -> None:
    response = await harness.post(CHECK, {"customer": "u1", "feature": "teleport.enabled"})
    assert_problem(response, 404, "feature_not_found")


async def test_check_limit_without_current_points_at_current(harness: Harness) -> None:
    """A limit that no meter counts needs `current` (spaces.max has a gauge; this has not)."""
    feature = "share.readonly_links.max"
    response = await harness.post(CHECK, {"customer": "u1", "feature": feature})
    body = assert_problem(response, 422, "invalid_input")
    assert set(pointers(body)) == {"#/current"}


async def test_check_denial_is_a_normal_answer(harness: Harness) -> None:
    response = await harness.post(
        CHECK, {"customer": "free-user", "feature": "spaces.max", "current": 3}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["allowed"] is False
    assert body["reason"] == "limit_reached"
    assert body["value"] == 3
    assert body["remaining"] == 0
    allowed = await harness.post(
        CHECK, {"customer": "free-user", "feature": "spaces.max", "current": 2}
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["allowed"] is True
    assert allowed.json()["remaining"] == 1


# Unexpected failures and correlation ids.


async def boom() -> None:
    raise RuntimeError("something broke that nobody planned for")


@short_path
async def short_boom(request: Request, call: ReadCall) -> Response:
    raise RuntimeError("something broke that nobody planned for")


# The same failure through FastAPI's routing and through a short path (see deps.short_path).
BOOM_ROUTES = pytest.mark.parametrize("boom_route", ["/test/boom", "/test/short-boom"])


def failing_client(harness: Harness) -> httpx.AsyncClient:
    """A second app on the harness's database, with routes that fail unexpectedly."""
    app = create_app(harness.settings, clock=harness.clock, database=harness.database)
    app.add_api_route("/test/boom", boom, methods=["GET"])
    app.add_api_route("/test/short-boom", short_boom, methods=["GET"])
    app.state.short_paths.update(short_paths(app.routes))
    assert ("GET", "/test/short-boom") in app.state.short_paths
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(
        transport=transport, base_url="http://billfold.test", headers=harness.admin
    )


def unhandled_count(metrics: str, route: str) -> float:
    pattern = rf'^billfold_unhandled_errors_total\{{route="{re.escape(route)}"\}} (\S+)$'
    found = re.search(pattern, metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@BOOM_ROUTES
async def test_unexpected_exception_is_a_counted_500(
    harness: Harness, caplog: pytest.LogCaptureFixture, boom_route: str
) -> None:
    async with failing_client(harness) as client:
        before = unhandled_count((await client.get("/metrics")).text, boom_route)
        assert before == 0
        response = await client.get(boom_route, headers={"X-Correlation-Id": "boom-1"})
        body = assert_problem(response, 500, "internal_error")
        assert body["correlation_id"] == "boom-1"
        assert "something broke" not in response.text  # no internals leak
        assert "RuntimeError" not in response.text
        second = await client.get(boom_route)
        generated = assert_problem(second, 500, "internal_error")["correlation_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated)
        metrics = (await client.get("/metrics")).text
        assert unhandled_count(metrics, boom_route) == 2
        assert 'billfold_problems_total{code="internal_error",status="500"} 2.0' in metrics
    assert any("boom-1" in record.getMessage() for record in caplog.records)


@BOOM_ROUTES
async def test_500_is_counted_as_an_answered_request(harness: Harness, boom_route: str) -> None:
    async with failing_client(harness) as client:
        assert_problem(await client.get(boom_route), 500, "internal_error")
        metrics = (await client.get("/metrics")).text
    answered = f'billfold_http_requests_total{{method="GET",route="{boom_route}",status="500"}} 1.0'
    assert answered in metrics
    assert f'billfold_http_request_duration_seconds_count{{route="{boom_route}"}} 1.0' in metrics


@BOOM_ROUTES
async def test_500_echoes_the_correlation_header(harness: Harness, boom_route: str) -> None:
    async with failing_client(harness) as client:
        response = await client.get(boom_route, headers={"X-Correlation-Id": "boom-2"})
        assert_problem(response, 500, "internal_error")
        assert response.headers["x-correlation-id"] == "boom-2"


async def test_correlation_id_is_echoed(harness: Harness) -> None:
    headers = {**harness.admin, "X-Correlation-Id": "req-123_abc.def:9"}
    ok = await harness.client.get("/v1/ping", headers=headers)
    assert ok.status_code == 200, ok.text
    assert ok.headers["x-correlation-id"] == "req-123_abc.def:9"
    refused = await harness.client.get("/v1/grants/not-an-id", headers=headers)
    assert refused.headers["x-correlation-id"] == "req-123_abc.def:9"
    assert refused.json()["correlation_id"] == "req-123_abc.def:9"
    anonymous = await harness.client.get("/v1/ping", headers={"X-Correlation-Id": "anon-1"})
    assert anonymous.headers["x-correlation-id"] == "anon-1"
    assert anonymous.json()["correlation_id"] == "anon-1"


async def test_correlation_id_is_generated_when_missing_or_unusable(harness: Harness) -> None:
    seen = set()
    for headers in ({}, {"X-Correlation-Id": "has spaces"}, {"X-Correlation-Id": "x" * 101}):
        response = await harness.client.get("/v1/ping", headers={**harness.admin, **headers})
        assert response.status_code == 200, response.text
        generated = response.headers["x-correlation-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", generated), generated
        seen.add(generated)
    assert len(seen) == 3
    refused = await harness.client.get("/v1/nothing-here")
    assert refused.json()["correlation_id"] == refused.headers["x-correlation-id"]


async def test_problems_are_counted(harness: Harness) -> None:
    await harness.get("/v1/grants/not-an-id")
    metrics = await harness.client.get("/metrics")
    assert metrics.status_code == 200
    assert 'billfold_problems_total{code="invalid_input",status="422"}' in metrics.text


async def test_a_client_leaving_mid_body_is_no_server_error(harness: Harness) -> None:
    """A disconnect while the body is read is answered (to nobody) without a 500."""
    app: Any = harness.client._transport.app  # type: ignore[attr-defined]
    token = harness.admin["Authorization"].encode()
    scope = {
        "type": "http",
        "method": "POST",
        "path": CHECK,
        "raw_path": CHECK.encode(),
        "query_string": b"",
        "headers": [(b"authorization", token), (b"content-type", b"application/json")],
        "http_version": "1.1",
        "scheme": "http",
        "server": ("billfold.test", 80),
        "client": ("127.0.0.1", 1),
        "root_path": "",
    }
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    assert messages[0]["status"] == 400
    metrics = (await harness.client.get("/metrics")).text
    assert 'billfold_problems_total{code="client_disconnected",status="400"} 1.0' in metrics
    assert "billfold_unhandled_errors_total{" not in metrics


# Short paths: the hot routes skip FastAPI's routing but answer the same.


async def test_the_hot_routes_take_the_short_path(harness: Harness) -> None:
    app = create_app(harness.settings, clock=harness.clock, database=harness.database)
    assert set(app.state.short_paths) == {
        ("GET", "/v1/ping"),
        ("POST", CHECK),
        ("POST", "/v1/entitlements/consume"),
    }


@short_path
async def short_write(request: Request, call: AdminCall) -> Response:
    return Response()


async def test_a_short_path_must_be_read_only(harness: Harness) -> None:
    app = create_app(harness.settings, clock=harness.clock, database=harness.database)
    app.add_api_route("/test/short-write", short_write, methods=["POST"])
    with pytest.raises(InvariantViolation, match="short path /test/short-write"):
        short_paths(app.routes)
