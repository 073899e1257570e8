"""A small vocabulary for billing stories: a customer on a test clock, moved across
periods, with its invoices read back as (kind, minor units) lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tests.conftest import Harness
from tests.factories import events


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Story:
    harness: Harness
    clock_id: str = ""
    subscriptions: dict[str, str] = field(default_factory=dict)

    async def begin(self, at: str, *customers: str) -> None:
        """A test clock frozen at `at` (ISO 8601, UTC), with new customers on it."""
        made = await self.harness.post("/v1/test-clocks", {"frozen_time": at})
        assert made.status_code == 201, made.text
        self.clock_id = made.json()["id"]
        for customer in customers:
            added = await self.harness.post(
                f"/v1/test-clocks/{self.clock_id}/customers", {"customer": customer}
            )
            assert added.status_code == 201, added.text

    async def subscribe(self, customer: str, **body: Any) -> dict[str, Any]:
        made = await self.harness.post(f"/v1/customers/{customer}/subscriptions", body)
        assert made.status_code == 201, made.text
        self.subscriptions[customer] = made.json()["id"]
        return dict(made.json())

    async def act(self, customer: str, action: str, body: Any = None) -> dict[str, Any]:
        """A lifecycle action (`change`, `cancel`, `pause`, ...) at the clock's time."""
        path = f"/v1/subscriptions/{self.subscriptions[customer]}/{action}"
        done = await self.harness.post(path, body)
        assert done.status_code == 200, done.text
        return dict(done.json())

    async def advance(self, to: str) -> None:
        done = await self.harness.post(
            f"/v1/test-clocks/{self.clock_id}/advance", {"frozen_time": to}
        )
        assert done.status_code == 200, done.text

    async def use(self, customer: str, at: str, *, tokens: int, count: int = 1) -> None:
        """AI-token usage at a simulated instant (stored as the API stores it)."""
        real = self.harness.clock.now()
        self.harness.clock.travel_to(instant(at))  # events are checked against "now"
        try:
            await events(self.harness, customer, count=count, at=instant(at), tokens=tokens)
        finally:
            self.harness.clock.travel_to(real)

    async def pay(self, customer: str) -> None:
        """The customer pays every open invoice (a manual payment of what is due); a
        customer who does not is past due, then suspended, as at any period close."""
        for invoice in await self.invoices(customer):
            if invoice["status"] == "open":
                paid = await self.harness.post(
                    f"/v1/invoices/{invoice['id']}/payments", {"method": "bank_transfer"}
                )
                assert paid.status_code == 201, paid.text

    async def subscription(self, customer: str) -> dict[str, Any]:
        found = await self.harness.get(f"/v1/subscriptions/{self.subscriptions[customer]}")
        return dict(found.json())

    async def invoices(self, customer: str) -> list[dict[str, Any]]:
        found = await self.harness.get(f"/v1/customers/{customer}/invoices", params={"limit": 100})
        return list(reversed(found.json()["invoices"]))

    async def lines(self, customer: str, index: int = -1) -> list[tuple[str, int]]:
        invoice = (await self.invoices(customer))[index]
        return [(line["kind"], line["amount_minor"]) for line in invoice["lines"]]

    async def period_ends(self, customer: str) -> list[str]:
        return [invoice["period_end"][:10] for invoice in await self.invoices(customer)]
