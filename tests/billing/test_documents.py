"""Finalized invoices are taxed for the customer's country, keep the seller and buyer they
were issued to, and come as HTML and PDF; the invoicing file is refused with its path."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from billfold.billing.close import CloseSettings
from billfold.billing.run import run
from billfold.invoicing import deps
from billfold.invoicing.taxes import TaxConfigError
from tests.billing.test_period_close import invoices, subscribe
from tests.conftest import Harness, assert_problem, new_harness

pytestmark = pytest.mark.anyio

INVOICING = """
seller:
  name: Example GmbH
  address: [Hauptstr. 1, 10115 Berlin]
  country: DE
  tax_id: DE123456789
locale: en_US
taxes:
  reverse_charge: EU
  rates:
    - {country: DE, rate: "19", name: VAT}
    - {country: FR, rate: "20", name: TVA}
"""


@pytest.fixture
async def taxed(tmp_path: Path, database_url: str) -> Any:
    path = tmp_path / "invoicing.yaml"
    path.write_text(INVOICING)
    harness = await new_harness(database_url, invoicing_file=str(path))
    try:
        yield harness
    finally:
        await harness.client.aclose()
        await harness.database.dispose()


async def close_taxed(harness: Harness) -> None:
    now = harness.clock.now()
    settings = CloseSettings(invoicing=deps.load(harness.settings.invoicing_file))
    report = await run(
        harness.database, now, now=now, settings=settings, tenant_id=harness.tenant_id
    )
    assert not report.failed, report.failed


async def customer(harness: Harness, name: str, **billing: Any) -> None:
    body = {"name": name.title(), "billing": billing}
    response = await harness.client.put(f"/v1/customers/{name}", json=body, headers=harness.admin)
    assert response.status_code in (200, 201), response.text


async def test_an_invoice_is_taxed_for_the_buyer_and_rendered(taxed: Harness) -> None:
    taxed.clock.travel_to(datetime(2026, 5, 1, 9, 0, tzinfo=UTC))
    await customer(taxed, "hans", country="DE", address=["Gartenweg 2", "80331 München"])
    await subscribe(taxed, "hans", plan="pro")
    await close_taxed(taxed)
    (invoice,) = await invoices(taxed, "hans")
    assert (invoice["subtotal_minor"], invoice["tax_minor"], invoice["total_minor"]) == (
        2900,
        551,
        3451,
    )
    assert (invoice["lines"][0]["tax_rate"], invoice["lines"][0]["tax_name"]) == ("19", "VAT")
    assert invoice["seller"]["name"] == "Example GmbH"
    assert invoice["buyer"]["address"] == ["Gartenweg 2", "80331 München"]

    # The invoice keeps the buyer it was issued to.
    await customer(taxed, "hans", country="AT")
    again = (await taxed.get(f"/v1/invoices/{invoice['id']}")).json()
    assert again["buyer"]["country"] == "DE"

    html = await taxed.get(f"/v1/invoices/{invoice['id']}.html")
    assert html.headers["content-type"].startswith("text/html")
    assert "Example GmbH" in html.text
    assert "$34.51" in html.text
    pdf = await taxed.get(f"/v1/invoices/{invoice['id']}.pdf")
    assert pdf.headers["content-type"] == "application/pdf"
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
    assert invoice["number"] in text
    assert "$34.51" in text  # the total, read back from the PDF

    receipt = await taxed.get(f"/v1/invoices/{invoice['id']}.pdf", params={"document": "receipt"})
    assert_problem(receipt, 409, "invoice_not_paid")
    await taxed.post(f"/v1/invoices/{invoice['id']}/payments")
    paid = await taxed.get(f"/v1/invoices/{invoice['id']}.html", params={"document": "receipt"})
    assert paid.status_code == 200
    assert "Receipt" in paid.text


async def test_a_business_in_another_eu_country_is_reverse_charged(taxed: Harness) -> None:
    await customer(taxed, "marie", country="FR", tax_id="FR12345678901")
    await subscribe(taxed, "marie", plan="pro")
    await close_taxed(taxed)
    (invoice,) = await invoices(taxed, "marie")
    assert (invoice["tax_minor"], invoice["total_minor"]) == (0, 2900)
    assert "Reverse charge" in invoice["tax_note"]


async def test_a_draft_renders_with_the_customer_as_now(harness: Harness) -> None:
    harness.clock.travel_to(datetime(2026, 5, 1, 9, 0, tzinfo=UTC))
    await subscribe(harness, "dora", plan="pro")
    (draft,) = await invoices(harness, "dora")
    assert draft["status"] == "draft"
    html = await harness.get(f"/v1/invoices/{draft['id']}.html")
    assert html.status_code == 200
    assert "draft" in html.text.lower()
    missing = await harness.get("/v1/invoices/inv_" + "a" * 26 + ".pdf")
    assert_problem(missing, 404, "invoice_not_found")


async def test_customer_billing_details_are_checked(harness: Harness) -> None:
    bad = await harness.client.put(
        "/v1/customers/x", json={"billing": {"country": "de"}}, headers=harness.admin
    )
    assert assert_problem(bad, 422, "invalid_input")["errors"][0]["pointer"] == (
        "#/billing/country"
    )
    ok = await harness.client.put(
        "/v1/customers/x",
        json={"billing": {"country": "US", "region": "CA", "locale": "en_US"}},
        headers=harness.admin,
    )
    assert ok.json()["billing"] == {
        "address": [],
        "country": "US",
        "region": "CA",
        "tax_id": None,
        "locale": "en_US",
    }


@pytest.mark.parametrize(
    ("document", "pointer"),
    [
        ("colour: blue", "#/colour"),
        ("seller: {country: DE}", "#/seller/name"),
        ("seller: {name: X, country: Germany}", "#/seller/country"),
        ("taxes: {rates: [{country: DE, rate: '-1', name: VAT}]}", "#/taxes/rates/0/rate"),
        ("tax_provider: nowhere:make", "#/tax_provider"),
    ],
)
def test_the_invoicing_file_is_refused_with_its_path(
    tmp_path: Path, document: str, pointer: str
) -> None:
    path = tmp_path / "invoicing.yaml"
    path.write_text(document)
    with pytest.raises(TaxConfigError) as caught:
        deps.load(path)
    assert caught.value.errors[0].pointer == pointer, caught.value.errors
