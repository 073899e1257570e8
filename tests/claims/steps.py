"""What the claim-code tests share: issuing a batch and redeeming a code through the API,
and reading back what a redemption did."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import httpx

from billfold.claims import codes
from tests.conftest import (
    Harness,
    new_harness,
)

BETA_FEATURES = {
    "spaces.max": 20,
    "share.enabled": True,
    "share.readonly_links.max": 10,
    "collab.max_members_per_space": 5,
    "rag.enabled": True,
    "devmode.enabled": True,
    "plugins": ["basic_*", "beta_*"],
    "ai.tokens": 50_000,
}


# Limits loose enough that only the property under test can refuse an attempt.
GENEROUS = {
    "claim_attempts_per_customer": 10_000,
    "claim_attempts_per_address": 10_000,
}


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def create_batch(harness: Harness, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "plan": "beta_tester",
        "count": 3,
        "duration": "365d",
        "max_redemptions": 1,
        "expires_at": "2027-06-30T23:59:59Z",
        "source": "kickstarter",
        "campaign": "KS-2026",
        "tier": "early-bird",
    }
    body.update(overrides)
    response = await harness.post("/v1/claims/batches", body)
    assert response.status_code == 201, response.text
    batch: dict[str, Any] = response.json()
    return batch


async def redeem(
    harness: Harness, customer: str, code: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await harness.post(
        "/v1/claims/redeem",
        {"customer": customer, "code": code},
        headers=headers or harness.admin,
    )


async def grants_of(harness: Harness, customer: str) -> list[dict[str, Any]]:
    """The customer's grants; a customer that was never created has none."""
    response = await harness.get(f"/v1/customers/{customer}/grants")
    if response.status_code == 404:
        assert response.json()["code"] == "customer_not_found"
        return []
    assert response.status_code == 200, response.text
    grants: list[dict[str, Any]] = response.json()["grants"]
    return grants


async def events_of(harness: Harness, **params: Any) -> list[dict[str, Any]]:
    response = await harness.get("/v1/audit/events", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return events


def typo_of(code: str) -> str:
    """The code with one character replaced by another character of the alphabet."""
    position = 5  # the first character of the second group
    wrong = next(c for c in codes.ALPHABET if c != code[position])
    return code[:position] + wrong + code[position + 1 :]


@asynccontextmanager
async def harness_with(database_url: str, **settings: Any) -> AsyncIterator[Harness]:
    built = await new_harness(database_url, **settings)
    try:
        yield built
    finally:
        await built.client.aclose()
        await built.database.dispose()
