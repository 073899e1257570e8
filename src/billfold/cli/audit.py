"""`billfold audit ...`: the hash-chained event log."""

from __future__ import annotations

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.audit import service as audit
from billfold.catalog.catalog import Catalog
from billfold.cli.common import DEFAULT_TENANT, TenantOption, in_tenant
from billfold.kit.context import Context

app = typer.Typer(help="The hash-chained event log.", no_args_is_help=True)


@app.command("verify")
def audit_verify(tenant: TenantOption = DEFAULT_TENANT) -> None:
    """Recompute the event log's hash chain; name the first edited, deleted or moved entry."""

    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> audit.Verification:
        return await audit.verify(session, ctx.tenant_id)

    result = in_tenant(tenant, work)
    typer.echo(result.describe())
    if not result.ok:
        raise typer.Exit(1)
