"""Who may call what: every operation against every scope, authentication, tenant isolation."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from billfold.app import PERMISSION_EXTENSION
from billfold.tenants.scopes import GRANTED, Permission, Scope
from tests.conftest import Harness, assert_problem, new_harness

pytestmark = pytest.mark.anyio

PROBLEM = "application/problem+json"
PUBLIC_OPERATIONS = {("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}
PUBLIC_UNDOCUMENTED = ("/openapi.json", "/docs", "/redoc")
# Non-GET operations that change nothing and so may carry a non-state-changing permission.
READ_ONLY_NON_GET = {("post", "/v1/entitlements/check"), ("post", "/v1/wallets/check")}
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
WELL_FORMED_BODY = "abcdefghijklmnopqrstuvwxyz"  # 26 characters of [a-z2-7]
ID_PREFIXES = {"grant_id": "grt", "subscription_id": "sub", "key_id": "key", "batch_id": "bat"}
NAMED_VALUES = {"external_id": "walk-user", "name": "basic_x"}
PARAMETER = re.compile(r"\{([^}]+)\}")


def assert_unauthenticated(response: httpx.Response) -> None:
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"].lower().startswith("bearer")


def path_value(name: str) -> str:
    if name in NAMED_VALUES:
        return NAMED_VALUES[name]
    assert name.endswith("_id"), f"the walker does not know how to fill {{{name}}}"
    return f"{ID_PREFIXES.get(name, 'xyz')}_{WELL_FORMED_BODY}"


def fill(path: str) -> str:
    return PARAMETER.sub(lambda match: path_value(match.group(1)), path)


async def operations(harness: Harness) -> list[tuple[str, str, dict[str, Any]]]:
    response = await harness.client.get("/openapi.json")
    assert response.status_code == 200, response.text
    found = [
        (method, path, operation)
        for path, item in response.json()["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]
    assert len(found) > 20, "the OpenAPI document lost its operations"
    return found


async def send(harness: Harness, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body = {} if method in ("post", "put") else None
    return await harness.client.request(method.upper(), fill(path), json=body, headers=headers)


async def test_every_operation_is_published_with_a_permission(harness: Harness) -> None:
    unmarked = set()
    for method, path, operation in await operations(harness):
        permission = operation.get(PERMISSION_EXTENSION)
        if permission is None:
            unmarked.add((method, path))
            continue
        assert permission in set(Permission), (method, path, permission)
        if method != "get" and (method, path) not in READ_ONLY_NON_GET:
            assert Permission(permission).changes_state, (
                f"{method.upper()} {path} changes state but only needs {permission!r}"
            )
        if (method, path) in READ_ONLY_NON_GET:
            assert not Permission(permission).changes_state, (method, path)
    # Every /v1 route states its permission; only the operational probes go without a key.
    assert not {(m, p) for m, p in unmarked if p.startswith("/v1")}
    assert unmarked == PUBLIC_OPERATIONS


async def test_public_operations_need_no_key(harness: Harness) -> None:
    for method, path in sorted(PUBLIC_OPERATIONS):
        response = await harness.client.request(method.upper(), path)
        assert response.status_code == 200, (path, response.text)
    for path in PUBLIC_UNDOCUMENTED:
        response = await harness.client.get(path)
        assert response.status_code == 200, (path, response.text)


async def test_every_operation_with_every_scope(harness: Harness) -> None:
    keys = {Scope.ADMIN: harness.admin}
    for scope in Scope:
        if scope is not Scope.ADMIN:
            keys[scope] = await harness.key(scope)
    walked = 0
    for method, path, operation in await operations(harness):
        permission = operation.get(PERMISSION_EXTENSION)
        if permission is None:
            continue
        needed = Permission(permission)
        for scope, headers in keys.items():
            response = await send(harness, method, path, headers)
            where = f"{method.upper()} {path} as {scope}: {response.status_code} {response.text}"
            if needed in GRANTED[scope]:
                assert response.status_code not in (401, 403), where
                assert response.status_code < 500, where
            elif scope is Scope.AGENT and needed.changes_state:
                assert_problem(response, 403, "agent_forbidden")
            else:
                body = assert_problem(response, 403, "insufficient_scope")
                assert str(needed) in body["detail"], where
            if response.status_code >= 400:
                assert response.headers["content-type"].startswith(PROBLEM), where
            walked += 1
    assert walked >= 20 * len(Scope)


async def test_every_operation_refuses_a_missing_key(harness: Harness) -> None:
    for method, path, operation in await operations(harness):
        if operation.get(PERMISSION_EXTENSION) is None:
            continue
        assert_unauthenticated(await send(harness, method, path, {}))


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer nope",
        "Bearer bfk_",
        "Bearer bfk_short_secret",
        "Bearer sk_abcdefghijklmnopqrstuvwxyz_secret",
        "Bearer bfk_ABCDEFGHIJKLMNOPQRSTUVWXYZ_secret",
        "Basic dXNlcjpwYXNz",
        "bfk_abcdefghijklmnopqrstuvwxyz_secret",
        "Bearer",
    ],
)
async def test_malformed_key_is_unauthenticated(harness: Harness, authorization: str) -> None:
    response = await harness.get("/v1/ping", headers={"Authorization": authorization})
    assert_unauthenticated(response)


async def test_missing_key_is_unauthenticated(harness: Harness) -> None:
    response = await harness.client.get("/v1/ping")
    assert_unauthenticated(response)


async def test_unknown_key_is_unauthenticated(harness: Harness) -> None:
    unknown = {"Authorization": f"Bearer bfk_{WELL_FORMED_BODY}_{'s' * 43}"}
    assert_unauthenticated(await harness.get("/v1/ping", headers=unknown))
    # A real key id with the wrong secret is just as unknown.
    token = harness.admin["Authorization"].removeprefix("Bearer ")
    prefix, key_body, _secret = token.split("_", 2)
    forged = {"Authorization": f"Bearer {prefix}_{key_body}_{'s' * 43}"}
    assert_unauthenticated(await harness.get("/v1/ping", headers=forged))


async def test_revoked_key_is_unauthenticated(harness: Harness) -> None:
    created = await harness.post("/v1/keys", {"name": "to revoke", "scope": "service"})
    assert created.status_code == 201, created.text
    key = created.json()
    headers = {"Authorization": f"Bearer {key['token']}"}
    ping = await harness.get("/v1/ping", headers=headers)
    assert ping.status_code == 200, ping.text
    assert ping.json() == {"ok": True, "tenant_id": harness.tenant_id, "scope": "service"}

    revoked = await harness.post(f"/v1/keys/{key['id']}/revoke")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None

    assert_unauthenticated(await harness.get("/v1/ping", headers=headers))
    check = {"customer": "u1", "feature": "share.enabled"}
    assert_unauthenticated(await harness.post("/v1/entitlements/check", check, headers=headers))
    # The admin key that revoked it still works.
    assert (await harness.get("/v1/ping")).status_code == 200


def scrubbed(response: httpx.Response, identifier: str) -> dict[str, Any]:
    body = json.loads(response.text.replace(identifier, "<id>"))
    body.pop("correlation_id", None)
    return {"status": response.status_code, "type": response.headers["content-type"], **body}


def same_answer(
    found: httpx.Response, missing: httpx.Response, found_id: str, missing_id: str
) -> None:
    """Another tenant's object is answered exactly like an id that does not exist."""
    assert scrubbed(found, found_id) == scrubbed(missing, missing_id)


def same_refusal(
    found: httpx.Response, missing: httpx.Response, found_id: str, missing_id: str
) -> None:
    assert found.status_code == 404, found.text
    assert found.headers["content-type"].startswith(PROBLEM)
    same_answer(found, missing, found_id, missing_id)


async def test_tenants_are_isolated(harness: Harness, database_url: str) -> None:
    customer = "iso-user"
    grant = await harness.post(
        f"/v1/customers/{customer}/grants", {"feature": "rag.enabled", "value": True}
    )
    assert grant.status_code == 201, grant.text
    grant_id = grant.json()["id"]
    subscription = await harness.post(f"/v1/customers/{customer}/subscriptions", {"plan": "pro"})
    assert subscription.status_code == 201, subscription.text
    subscription_id = subscription.json()["id"]
    key = await harness.post("/v1/keys", {"name": "tenant a service", "scope": "service"})
    assert key.status_code == 201, key.text
    key_id = key.json()["id"]

    other = await new_harness(database_url)
    try:
        assert other.tenant_id != harness.tenant_id
        fake = f"_{WELL_FORMED_BODY}"
        fake_grant, fake_sub, fake_key = "grt" + fake, "sub" + fake, "key" + fake
        stranger = "never-seen-user"

        pairs = [
            (f"/v1/grants/{grant_id}", f"/v1/grants/{fake_grant}", grant_id, fake_grant),
            (
                f"/v1/subscriptions/{subscription_id}",
                f"/v1/subscriptions/{fake_sub}",
                subscription_id,
                fake_sub,
            ),
            (f"/v1/customers/{customer}", f"/v1/customers/{stranger}", customer, stranger),
        ]
        for found_path, missing_path, found_id, missing_id in pairs:
            same_refusal(
                await other.get(found_path), await other.get(missing_path), found_id, missing_id
            )
        mutations = [
            (f"/v1/grants/{grant_id}/revoke", f"/v1/grants/{fake_grant}/revoke", {}),
            (
                f"/v1/subscriptions/{subscription_id}/cancel",
                f"/v1/subscriptions/{fake_sub}/cancel",
                {},
            ),
            (
                f"/v1/subscriptions/{subscription_id}/renew",
                f"/v1/subscriptions/{fake_sub}/renew",
                {"period_ends_at": "2027-01-01T00:00:00Z"},
            ),
            (f"/v1/keys/{key_id}/revoke", f"/v1/keys/{fake_key}/revoke", None),
        ]
        for found_path, missing_path, body in mutations:
            found_id = found_path.split("/")[3]
            missing_id = missing_path.split("/")[3]
            same_refusal(
                await other.post(found_path, body),
                await other.post(missing_path, body),
                found_id,
                missing_id,
            )

        # Tenant B sees A's customer as a stranger, whatever it asks about it.
        for suffix in ("/entitlements", "/grants", "/subscriptions", "/plugins/beta_x"):
            same_answer(
                await other.get(f"/v1/customers/{customer}{suffix}"),
                await other.get(f"/v1/customers/{stranger}{suffix}"),
                customer,
                stranger,
            )
        same_answer(
            await other.get(f"/v1/audit/events?customer={customer}"),
            await other.get(f"/v1/audit/events?customer={stranger}"),
            customer,
            stranger,
        )
        check = {"customer": customer, "feature": "rag.enabled"}
        checked = await other.post("/v1/entitlements/check", check)
        assert checked.status_code == 200, checked.text
        assert checked.json()["allowed"] is False
        events = await other.get("/v1/audit/events")
        assert events.status_code == 200, events.text
        assert all(event["customer"] != customer for event in events.json()["events"])
        listed = await other.get("/v1/customers")
        assert listed.status_code == 200, listed.text
        assert listed.json()["customers"] == []
        keys = await other.get("/v1/keys")
        assert keys.status_code == 200, keys.text
        assert key_id not in {k["id"] for k in keys.json()["keys"]}
        # A's key does not open B's tenant: it answers for A, never B.
        a_token = {"Authorization": f"Bearer {key.json()['token']}"}
        ping = await other.get("/v1/ping", headers=a_token)
        assert ping.json()["tenant_id"] == harness.tenant_id
        # The same external id is a different customer in B.
        created = await other.client.put(f"/v1/customers/{customer}", json={}, headers=other.admin)
        assert created.status_code == 201, created.text
    finally:
        await other.client.aclose()
        await other.database.dispose()

    # Nothing B tried reached A's state.
    after = await harness.get(f"/v1/grants/{grant_id}")
    assert after.status_code == 200, after.text
    assert after.json()["revoked_at"] is None
    assert after.json()["status"] == "live"
    sub_after = await harness.get(f"/v1/subscriptions/{subscription_id}")
    assert sub_after.status_code == 200, sub_after.text
    assert sub_after.json()["status"] == subscription.json()["status"]
    assert sub_after.json()["canceled_at"] is None
    assert (
        sub_after.json()["current_period_ends_at"] == subscription.json()["current_period_ends_at"]
    )
    a_ping = await harness.get(
        "/v1/ping", headers={"Authorization": f"Bearer {key.json()['token']}"}
    )
    assert a_ping.status_code == 200, a_ping.text
    profile = await harness.get(f"/v1/customers/{customer}")
    assert profile.status_code == 200, profile.text
    assert profile.json()["id"] != created.json()["id"]
