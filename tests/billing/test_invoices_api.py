"""Invoices through the API: read and filter them, record manual payments, void, mark
uncollectible; every refusal a problem with a stable code."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.billing.test_period_close import close, invoices, subscribe
from tests.conftest import Harness, assert_problem

pytestmark = pytest.mark.anyio

MAY_1 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


async def open_invoice(harness: Harness, customer: str, **body: Any) -> dict[str, Any]:
    harness.clock.travel_to(MAY_1)
    await subscribe(harness, customer, plan="pro", **body)
    await close(harness)
    (invoice,) = await invoices(harness, customer)
    assert invoice["status"] == "open", invoice
    return invoice


async def test_a_payment_in_two_parts_pays_the_invoice(harness: Harness) -> None:
    invoice = await open_invoice(harness, "ann")
    url = f"/v1/invoices/{invoice['id']}/payments"
    first = await harness.post(url, {"amount_minor": 900, "reference": "wire 1"})
    assert first.status_code == 201, first.text
    assert (first.json()["status"], first.json()["due_minor"]) == ("open", 2000)
    too_much = await harness.post(url, {"amount_minor": 2001})
    body = assert_problem(too_much, 409, "payment_exceeds_amount_due")
    assert body["due_minor"] == 2000
    harness.clock.advance(timedelta(hours=2))
    rest = await harness.post(url)  # the whole amount due
    assert (rest.json()["status"], rest.json()["due_minor"], rest.json()["paid_minor"]) == (
        "paid",
        0,
        2900,
    )
    assert [p["amount_minor"] for p in rest.json()["payments"]] == [900, 2000]
    again = await harness.post(url, {"amount_minor": 1})
    assert assert_problem(again, 409, "invoice_status_conflict")["current_status"] == "paid"
    void = await harness.post(f"/v1/invoices/{invoice['id']}/void", {"reason": "test"})
    assert_problem(void, 409, "invoice_status_conflict")


async def test_a_retried_payment_is_recorded_once(harness: Harness) -> None:
    invoice = await open_invoice(harness, "ben")
    headers = {**harness.admin, "Idempotency-Key": "pay-ben-1"}
    url = f"/v1/invoices/{invoice['id']}/payments"
    answers = await asyncio.gather(
        *(harness.post(url, {"amount_minor": 500}, headers=headers) for _ in range(4))
    )
    codes = sorted(answer.status_code for answer in answers)
    assert codes[0] == 201, [a.text for a in answers]
    assert set(codes) <= {201, 409}, [a.text for a in answers]
    stored = (await harness.get(f"/v1/invoices/{invoice['id']}")).json()
    assert (stored["paid_minor"], len(stored["payments"])) == (500, 1)


async def test_void_and_uncollectible(harness: Harness) -> None:
    invoice = await open_invoice(harness, "cat")
    marked = await harness.post(f"/v1/invoices/{invoice['id']}/mark-uncollectible")
    assert marked.json()["status"] == "uncollectible"
    paid = await harness.post(f"/v1/invoices/{invoice['id']}/payments", {"amount_minor": 2900})
    assert paid.json()["status"] == "paid"  # a late payment still settles it

    other = await open_invoice(harness, "dan")
    voided = await harness.post(f"/v1/invoices/{other['id']}/void", {"reason": "duplicate"})
    assert (voided.json()["status"], voided.json()["void_reason"], voided.json()["due_minor"]) == (
        "void",
        "duplicate",
        0,
    )
    assert voided.json()["number"] == other["number"]  # a number is never reused
    no_reason = await harness.post(f"/v1/invoices/{other['id']}/void", {})
    assert no_reason.status_code == 422


async def test_invoices_are_listed_by_status_and_period_page_by_page(harness: Harness) -> None:
    for name in ("e1", "e2", "e3"):
        await open_invoice(harness, name)
    first = await open_invoice(harness, "e4")
    await harness.post(f"/v1/invoices/{first['id']}/payments")
    paid = (await harness.get("/v1/invoices", params={"status": "paid"})).json()["invoices"]
    assert [i["id"] for i in paid] == [first["id"]]
    both = await harness.get("/v1/invoices", params=[("status", "paid"), ("status", "open")])
    assert len(both.json()["invoices"]) == 4
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = (await harness.get("/v1/invoices", params=params)).json()
        seen += [i["id"] for i in page["invoices"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 4
    later = await harness.get("/v1/invoices", params={"period_from": "2026-06-01T00:00:00Z"})
    assert later.json()["invoices"] == []
    naive = await harness.get("/v1/invoices", params={"period_from": "2026-06-01T00:00:00"})
    assert_problem(naive, 422, "invalid_input")


async def test_unknown_invoices_and_customers(harness: Harness) -> None:
    missing = await harness.get("/v1/invoices/inv_" + "a" * 26)
    assert_problem(missing, 404, "invoice_not_found")
    pay = await harness.post("/v1/invoices/inv_" + "a" * 26 + "/payments")
    assert_problem(pay, 404, "invoice_not_found")
    nobody = await harness.get("/v1/customers/nobody/invoices")
    assert_problem(nobody, 404, "customer_not_found")
    read_only = await harness.key("readonly")
    refused = await harness.post(
        "/v1/invoices/inv_" + "a" * 26 + "/void", {"reason": "x"}, headers=read_only
    )
    assert refused.status_code == 403


async def test_credit_notes_lower_what_is_due_and_never_edit_the_invoice(
    harness: Harness,
) -> None:
    invoice = await open_invoice(harness, "cara")
    url = f"/v1/invoices/{invoice['id']}/credit-notes"
    part = await harness.post(
        url, {"reason": "outage", "lines": [{"position": 1, "amount_minor": 900}]}
    )
    assert part.status_code == 201, part.text
    assert (part.json()["number"], part.json()["total_minor"]) == ("CN-2026-000001", 900)
    after = (await harness.get(f"/v1/invoices/{invoice['id']}")).json()
    assert (after["credited_minor"], after["due_minor"], after["status"]) == (900, 2000, "open")
    assert after["lines"] == invoice["lines"]  # the invoice itself never changes
    too_much = await harness.post(
        url, {"reason": "x", "lines": [{"position": 1, "amount_minor": 2001}]}
    )
    assert assert_problem(too_much, 422, "credit_exceeds_line")["left_minor"] == 2000
    no_line = await harness.post(url, {"reason": "x", "lines": [{"position": 9}]})
    assert assert_problem(no_line, 422, "invalid_input")["errors"][0]["pointer"] == (
        "#/lines/0/position"
    )
    rest = await harness.post(url, {"reason": "goodwill"})  # all that is left
    assert rest.json()["total_minor"] == 2000
    settled = (await harness.get(f"/v1/invoices/{invoice['id']}")).json()
    assert (settled["status"], settled["due_minor"], settled["paid_minor"]) == ("paid", 0, 0)
    listed = (await harness.get(url)).json()["credit_notes"]
    assert [n["number"] for n in listed] == ["CN-2026-000001", "CN-2026-000002"]
    again = await harness.post(url, {"reason": "once more"})  # credited in full
    assert_problem(again, 422, "invalid_input")


async def test_crediting_what_was_paid_needs_refund_to(harness: Harness) -> None:
    invoice = await open_invoice(harness, "pat")
    await harness.post(f"/v1/invoices/{invoice['id']}/payments", {"amount_minor": 2000})
    refused = await harness.post(f"/v1/invoices/{invoice['id']}/credit-notes", {"reason": "x"})
    body = assert_problem(refused, 409, "credit_exceeds_amount_due")
    assert (body["due_minor"], body["refund_minor"]) == (900, 2000)
