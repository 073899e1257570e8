"""`billfold ledger ...`: the double-entry ledger (docs/ledger.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from billfold.cli.common import run
from billfold.kit.db import Database
from billfold.ledger.verify import Verification, verify
from billfold.tenants import service as tenants

app = typer.Typer(help="The double-entry ledger.", no_args_is_help=True)


@app.command("verify")
def ledger_verify(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="tenant slug (default: every tenant)")
    ] = None,
) -> None:
    """Recompute every account's balances from the transfers, and check that each
    unit's debits equal its credits and that no account breaks its rule; print each
    disagreement, or `ok: N accounts, M transfers`. Exits 1 on any disagreement."""

    async def work(database: Database) -> Verification:
        # Repeatable read on PostgreSQL, so that balances and transfers are read as of
        # one instant while transfers go on (read committed sees each statement's own).
        async with database.transaction(write=False) as session:
            if database.is_postgres:
                await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            tenant_id = None
            if tenant is not None:
                tenant_id = (await tenants.tenant_by_slug(session, tenant)).id
            return await verify(session, tenant_id)

    result = run(work)
    typer.echo(result.describe())
    if not result.ok:
        raise typer.Exit(1)
