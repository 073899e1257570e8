from __future__ import annotations

import pytest

from tests.conftest import Harness

pytestmark = pytest.mark.anyio


async def test_unknown_customer_gets_the_default_plan(harness: Harness) -> None:
    response = await harness.get("/v1/customers/new-user/entitlements")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["known"] is False
    assert body["entitlements"]["spaces.max"]["value"] == 3
    assert body["entitlements"]["share.enabled"]["value"] is False
    assert body["entitlements"]["plugins"]["value"] == ["basic_*"]
