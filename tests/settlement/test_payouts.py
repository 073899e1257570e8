"""Payout batches: once a period, each payee's payable is paid out (payable -> cash),
never twice; the CSV per payee, through the API and the command."""

from __future__ import annotations

import csv
import io
import tempfile
from datetime import timedelta

import anyio
import pytest

from billfold.kit.clock import SystemClock
from billfold.settlement import payouts
from billfold.settlement.records import PayoutBatch
from tests.billing.test_cli_billing import command
from tests.conftest import Harness, assert_problem
from tests.settlement.helpers import assert_ledger_verifies, net, put_split, settle

pytestmark = pytest.mark.anyio


async def run_payouts(harness: Harness, period: str | None = None) -> PayoutBatch:
    async with harness.database.transaction() as session:
        ctx = harness.operator()
        return await payouts.run(session, ctx, period or payouts.default_period(ctx))


async def sell(harness: Harness) -> None:
    await put_split(harness, "chess")
    await put_split(harness, "notes", [("bo", "creator", "100")])
    await settle(harness, "p1", "public_app_purchase", 10_000, app_id="chess")
    await settle(harness, "p2", "private_app_purchase", 2000, app_id="notes")
    response = await harness.post(
        "/v1/settlements",
        {
            "id": "p3",
            "type": "private_app_purchase",
            "amount": 1000,
            "currency": "EUR",
            "app_id": "notes",
        },
    )
    assert response.status_code == 201, response.text


async def test_a_run_pays_every_payable_once_a_period(platform: Harness) -> None:
    await sell(platform)
    batch = await run_payouts(platform)
    assert batch.created
    assert batch.period == "2026-06-01"  # the harness clock's day
    assert [(line.payee, line.currency, line.amount) for line in batch.lines] == [
        ("ada", "USD", 4825),
        ("bo", "EUR", 965),
        ("bo", "USD", 1930),
        ("ivy", "USD", 2895),
        ("ole", "USD", 1930),
    ]
    assert batch.lines[0].transfer_id == f"payout:{batch.id}:ada:USD"
    for code in ("payable:ada:USD", "payable:bo:EUR", "payable:bo:USD", "payable:ivy:USD"):
        assert await net(platform, code) == 0
    # cash came in 12,000 USD and went out all but the fee (350 + 70)
    assert await net(platform, "cash:USD") == -12_000 + 4825 + 1930 + 2895 + 1930
    again = await run_payouts(platform)
    assert (again.created, again.id, again.lines) == (False, batch.id, batch.lines)
    # new money: the day's batch is made, so it waits for the next period
    await settle(platform, "p4", "private_app_purchase", 100, app_id="notes")
    same_day = await run_payouts(platform)
    assert (same_day.created, same_day.lines) == (False, batch.lines)
    assert await net(platform, "payable:bo:USD") == 96
    platform.clock.travel_to(platform.clock.now() + timedelta(days=1))
    later = await run_payouts(platform)
    assert (later.period, [(line.payee, line.currency, line.amount) for line in later.lines]) == (
        "2026-06-02",
        [("bo", "USD", 96)],  # 100 less 3.5% (3.5 -> 4, half to even)
    )
    events = (await platform.get("/v1/audit/events", params={"type": "PayoutBatchCreated"})).json()
    assert [e["data"]["transfer_ids"] for e in events["events"]] == [
        [line.transfer_id for line in batch.lines],
        [line.transfer_id for line in later.lines],
    ]
    await assert_ledger_verifies(platform)


async def test_the_csv_per_payee_and_the_batch_through_the_api(platform: Harness) -> None:
    await sell(platform)
    batch = await run_payouts(platform)
    shown = (await platform.get(f"/v1/payouts/{batch.id}")).json()
    assert shown["payees"] == ["ada", "bo", "ivy", "ole"]
    response = await platform.get(f"/v1/payouts/{batch.id}/payees/bo.csv")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["currency"], r["amount_minor"], r["amount"]) for r in rows] == [
        ("EUR", "965", "9.65"),
        ("USD", "1930", "19.30"),
    ]
    assert rows[0]["transfer_id"] == f"payout:{batch.id}:bo:EUR"
    assert_problem(
        await platform.get(f"/v1/payouts/{batch.id}/payees/zed.csv"), 404, "payout_payee_not_found"
    )
    assert_problem(
        await platform.get(f"/v1/payouts/pob_{'a' * 26}/payees/bo.csv"),
        404,
        "payout_batch_not_found",
    )


async def test_a_run_through_the_api_is_made_once_a_period(platform: Harness) -> None:
    await sell(platform)
    made = await platform.post("/v1/payouts", {})
    assert made.status_code == 201, made.text
    batch = made.json()
    assert (batch["period"], batch["payees"]) == ("2026-06-01", ["ada", "bo", "ivy", "ole"])
    assert [(line["payee"], line["amount"]) for line in batch["lines"]][:2] == [
        ("ada", 4825),
        ("bo", 965),
    ]
    again = await platform.post("/v1/payouts", {"period": "2026-06-01"})
    assert again.status_code == 200, again.text
    assert again.json() == batch
    assert await net(platform, "payable:ada:USD") == 0
    other = await platform.post("/v1/payouts", {"period": "june-extra"})
    assert other.status_code == 201, other.text
    assert other.json()["lines"] == []  # everything owed was paid by the first
    bad = await platform.post("/v1/payouts", {"period": "no spaces"})
    assert_problem(bad, 422, "invalid_input")
    assert bad.json()["errors"][0]["pointer"] == "#/period"
    await assert_ledger_verifies(platform)


async def test_the_commands_run_a_batch_and_export_a_csv_per_payee(platform: Harness) -> None:
    await sell(platform)
    code, out, err = await command(platform, "payouts", "run", "--period", "2026-W23")
    assert code == 0, err
    batch_id = out.split()[0]
    assert "made, 5 line(s)" in out
    code, out, err = await command(platform, "payouts", "run", "--period", "2026-W23")
    assert (code, "already made for this period, 5 line(s)" in out) == (0, True), err
    with tempfile.TemporaryDirectory() as folder:
        code, out, err = await command(platform, "payouts", "export", batch_id, "--out", folder)
        assert code == 0, err
        written = sorted([path.name async for path in anyio.Path(folder).iterdir()])
        assert written == ["ada.csv", "bo.csv", "ivy.csv", "ole.csv"]
        text = await (anyio.Path(folder) / "ada.csv").read_text()
    assert text.splitlines()[1].startswith(f"{batch_id},2026-W23,ada,USD,4825,48.25,")
    code, _out, err = await command(platform, "payouts", "run", "--period", "bad period")
    assert code == 1
    assert "invalid_payout_period" in err
    code, out, err = await command(platform, "ledger", "verify")
    assert code == 0, out + err


async def test_the_scheduled_run_pays_each_tenant_for_the_day(platform: Harness) -> None:
    await sell(platform)
    now = SystemClock().now()
    # Every tenant of the test database is run; some other tests leave a tenant whose
    # event-log head was tampered with: its run fails, is counted, and the rest go on.
    failures: list[int] = []
    report = await payouts.run_every_tenant(
        platform.database, now, on_failure=lambda: failures.append(1)
    )
    assert platform.tenant_id not in {tenant for tenant, _error in report.failed}
    assert len(failures) == len(report.failed)
    assert report.batches >= 1
    assert report.lines >= 5
    assert await net(platform, "payable:ada:USD") == 0
    again = await payouts.run_every_tenant(platform.database, now)
    assert (again.batches, again.lines) == (0, 0)
    assert await net(platform, "cash:USD") == -12_000 + 4825 + 1930 + 2895 + 1930
    await assert_ledger_verifies(platform)
