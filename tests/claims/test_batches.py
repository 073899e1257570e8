"""Issuing claim codes: a batch answers its codes once, as JSON or CSV, and stores only
their keyed hashes."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from sqlalchemy import select

from billfold.claims import codes
from billfold.claims.tables import claim_codes
from tests.claims.steps import (
    at,
    create_batch,
    iso,
    redeem,
)
from tests.conftest import (
    CSV_HEADER,
    SECRET_KEY,
    START,
    Harness,
    assert_problem,
)

pytestmark = pytest.mark.anyio


async def test_a_batch_answers_its_codes_once_as_json(harness: Harness) -> None:
    batch = await create_batch(harness, count=5)
    assert batch["id"].startswith("clb_")
    assert batch["plan"] == "beta_tester"
    assert batch["count"] == 5
    assert batch["duration"] == "365d"
    assert batch["max_redemptions"] == 1
    assert at(batch["expires_at"]) == at("2027-06-30T23:59:59Z")
    assert batch["source"] == "kickstarter"
    assert batch["metadata"] == {"campaign": "KS-2026", "tier": "early-bird"}
    assert at(batch["created_at"]) == START
    issued = batch["codes"]
    assert len(issued) == len(set(issued)) == 5
    for code in issued:
        assert codes.normalize(code) == code.replace("-", "")
        assert len(code) == 24
        assert code.count("-") == 4


async def test_codes_are_stored_only_as_keyed_hashes(harness: Harness) -> None:
    batch = await create_batch(harness, count=4)
    async with harness.database.transaction(write=False) as session:
        rows = (
            await session.execute(select(claim_codes).where(claim_codes.c.batch_id == batch["id"]))
        ).all()
    assert len(rows) == 4
    stored_values = {str(value) for row in rows for value in row}
    expected_hashes = set()
    for code in batch["codes"]:
        compact = code.replace("-", "")
        for form in (code, compact, compact.lower()):
            assert not any(form in value for value in stored_values)
        normalized = codes.normalize(code)
        assert normalized is not None
        expected_hashes.add(codes.keyed_hash(SECRET_KEY, normalized))
    assert {row.code_hash for row in rows} == expected_hashes


async def test_a_batch_answers_csv_when_asked(harness: Harness) -> None:
    response = await harness.post(
        "/v1/claims/batches",
        {
            "plan": "beta_tester",
            "count": 4,
            "duration": "lifetime",
            "max_redemptions": 2,
            "expires_at": "2027-06-30T23:59:59Z",
            "source": "kickstarter",
            "campaign": "KS-2026",
            "tier": "backer",
        },
        headers={**harness.admin, "Accept": "text/csv"},
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("text/csv")
    reader = csv.reader(io.StringIO(response.text))
    header, *rows = list(reader)
    assert header == CSV_HEADER
    assert len(rows) == 4
    records = [dict(zip(header, row, strict=True)) for row in rows]
    assert len({record["batch_id"] for record in records}) == 1
    assert records[0]["batch_id"].startswith("clb_")
    assert len({record["code"] for record in records}) == 4
    for record in records:
        assert codes.normalize(record["code"]) is not None
        assert record["plan"] == "beta_tester"
        assert record["duration"] == "lifetime"
        assert record["max_redemptions"] == "2"
        assert at(record["expires_at"]) == at("2027-06-30T23:59:59Z")
        assert record["source"] == "kickstarter"
        assert record["campaign"] == "KS-2026"
        assert record["tier"] == "backer"
    # The codes in the CSV are the real ones.
    redeemed = await redeem(harness, "csv-backer", records[2]["code"])
    assert redeemed.status_code == 200, redeemed.text
    assert redeemed.json()["batch_id"] == records[2]["batch_id"]


async def test_a_batch_that_cannot_be_issued_is_refused(harness: Harness) -> None:
    base = {"plan": "beta_tester", "count": 1, "duration": "365d", "source": "kickstarter"}
    bad_duration = await harness.post("/v1/claims/batches", {**base, "duration": "1 year"})
    body = assert_problem(bad_duration, 422, "invalid_input")
    assert body["errors"][0]["pointer"] == "#/duration"

    past = await harness.post(
        "/v1/claims/batches", {**base, "expires_at": iso(START - timedelta(seconds=1))}
    )
    body = assert_problem(past, 422, "invalid_input")
    assert body["errors"][0]["pointer"] == "#/expires_at"

    unknown_plan = await harness.post("/v1/claims/batches", {**base, "plan": "platinum"})
    assert_problem(unknown_plan, 404, "plan_not_found")

    no_redemptions = await harness.post("/v1/claims/batches", {**base, "max_redemptions": 0})
    body = assert_problem(no_redemptions, 422, "invalid_input")
    assert body["errors"][0]["pointer"] == "#/max_redemptions"

    service_key = await harness.key("service")
    not_admin = await harness.post("/v1/claims/batches", base, headers=service_key)
    assert_problem(not_admin, 403, "insufficient_scope")
