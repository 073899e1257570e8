"""`billfold wallets ...`: prepaid wallets (docs/wallets.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from billfold.cli.common import run
from billfold.kit.clock import SystemClock
from billfold.kit.db import Database
from billfold.tenants import service as tenants
from billfold.wallets.expiry import ExpiryReport, expire_all

app = typer.Typer(help="Prepaid wallets.", no_args_is_help=True)


@app.command("expire")
def wallets_expire(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="tenant slug (default: every tenant)")
    ] = None,
) -> None:
    """Run the expiry job once, now: release holds whose timeout passed (and any other
    timed-out pending ledger transfer), and move what expired wallet credit still holds
    to breakage. Idempotent; `billfold worker wallets` runs it continuously."""

    async def work(database: Database) -> ExpiryReport:
        tenant_ids = None
        if tenant is not None:
            async with database.transaction(write=False) as session:
                tenant_ids = [(await tenants.tenant_by_slug(session, tenant)).id]
        return await expire_all(database, SystemClock().now(), tenant_ids)

    typer.echo(run(work).describe())
