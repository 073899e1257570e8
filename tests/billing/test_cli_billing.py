"""`billfold invoices run` and `billfold subscriptions migrate`, run as the commands."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from subprocess import PIPE

import pytest
from sqlalchemy import text

from billfold.kit.clock import SystemClock
from tests.billing.test_period_close import close, invoices, subscribe
from tests.conftest import PLANS, ROOT, SECRET_KEY, Harness

pytestmark = pytest.mark.anyio

BILLFOLD = ROOT / ".venv" / "bin" / "billfold"


async def command(harness: Harness, *args: str) -> tuple[int, str, str]:
    async with harness.database.transaction(write=False) as session:
        slug = (
            await session.execute(
                text("SELECT slug FROM tenants WHERE id = :id"), {"id": harness.tenant_id}
            )
        ).scalar_one()
    env = {
        **os.environ,
        "BILLFOLD_DATABASE_URL": harness.settings.database_url,
        "BILLFOLD_SECRET_KEY": SECRET_KEY.decode(),
    }
    process = await asyncio.create_subprocess_exec(
        BILLFOLD, *args, "--tenant", slug, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_invoices_run_finalizes_and_refuses_the_future(harness: Harness) -> None:
    harness.clock.travel_to(SystemClock().now() - timedelta(hours=2))
    await subscribe(harness, "ada", plan="pro")
    code, out, _err = await command(harness, "invoices", "run")
    assert code == 0
    assert "closed 0 period(s), made 0 invoice(s), finalized 1, moved 0 by dunning, 0 failed" in out
    (invoice,) = await invoices(harness, "ada")
    assert (invoice["status"], invoice["total_minor"]) == ("open", 2900)
    future = (SystemClock().now() + timedelta(days=1)).isoformat()
    code, _out, err = await command(harness, "invoices", "run", "--until", future)
    assert code == 1
    assert "is in the future" in err


async def test_migrate_moves_grandfathered_subscriptions(harness: Harness) -> None:
    sub = await subscribe(harness, "gus", plan="pro")
    await harness.apply_plans(PLANS.read_text().replace('amount: "29.00"', 'amount: "31.00"'))
    assert (await harness.get(f"/v1/subscriptions/{sub['id']}")).json()["plan_version"] == 1
    code, out, err = await command(
        harness, "subscriptions", "migrate", "--plan", "pro", "--to-version", "2"
    )
    assert code == 0, err
    assert "moved 1 subscription(s) of pro to v2" in out
    moved = (await harness.get(f"/v1/subscriptions/{sub['id']}")).json()
    assert moved["plan_version"] == 2
    harness.clock.travel_to(harness.clock.now() + timedelta(days=31))
    await close(harness)
    assert (await invoices(harness, "gus"))[-1]["lines"][-1]["amount_minor"] == 3100
    code, _out, err = await command(
        harness, "subscriptions", "migrate", "--plan", "pro", "--to-version", "9"
    )
    assert code == 1
    assert "plan_version_not_found" in err
