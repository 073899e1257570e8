"""`billfold audit ...`: the keyed, hash-chained event log (decision 0025)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.audit import service as audit
from billfold.catalog.catalog import Catalog
from billfold.cli.common import DEFAULT_TENANT, TenantOption, fail, in_tenant, run
from billfold.kit.clock import SystemClock
from billfold.kit.context import Context
from billfold.kit.db import Database
from billfold.tenants import service as tenants

app = typer.Typer(help="The keyed, hash-chained event log.", no_args_is_help=True)

CHECKPOINT_FORMAT = "billfold-audit-checkpoint/1"


@app.command("verify")
def audit_verify(
    tenant: TenantOption = DEFAULT_TENANT,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="a file from `billfold audit checkpoint`: the log must still reach it"),
    ] = None,
) -> None:
    """Recompute the event log's keyed chain; name the first edited, deleted or moved
    entry, a head moved back without the key, or a log cut short of the checkpoint."""
    heads = _read_checkpoint(checkpoint) if checkpoint else None

    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> audit.Verification:
        anchor = None
        if heads is not None:
            anchor = heads.get(ctx.tenant_id)
            if anchor is None:
                fail(f"{checkpoint} holds no head of tenant {tenant!r}")
        return await audit.verify(session, ctx.tenant_id, anchor)

    result = in_tenant(tenant, work)
    typer.echo(result.describe())
    if not result.ok:
        raise typer.Exit(1)


@app.command("seal")
def audit_seal() -> None:
    """Give every chain head written before the chain was keyed its MAC, once its
    entries verify. Run once after upgrading; a sealed head is left as it is."""

    async def work(database: Database) -> list[tuple[str, audit.Verification]]:
        async with database.transaction() as session:
            return [
                (found.slug, await audit.seal(session, found.id))
                for found in await tenants.list_tenants(session)
            ]

    broken = 0
    for slug, result in run(work):
        typer.echo(f"{slug}: {'sealed' if result.ok else 'NOT sealed'}: {result.describe()}")
        broken += not result.ok
    if broken:
        raise typer.Exit(1)


@app.command("checkpoint")
def audit_checkpoint(
    out: Annotated[Path, typer.Option("--out", help="file to write (keep it off the database)")],
) -> None:
    """Export every tenant's chain head, under a MAC of the chain key, to a file kept
    outside the database; `audit verify --checkpoint FILE` then fails if the log was cut
    back or rewritten before that point. Refuses while a chain does not verify."""

    async def work(database: Database) -> list[tuple[str, audit.Verification, dict[str, Any]]]:
        async with database.transaction(write=False) as session:
            found = []
            for each in await tenants.list_tenants(session):
                result, head = await audit.checkpoint(session, each.id)
                found.append((each.slug, result, head.as_json()))
            return found

    heads = run(work)
    broken = [f"{slug}: {result.describe()}" for slug, result, _head in heads if not result.ok]
    if broken:
        fail("no checkpoint written: a chain does not verify\n" + "\n".join(broken))
    document = {
        "format": CHECKPOINT_FORMAT,
        "written_at": SystemClock().now().isoformat(),
        "heads": [{"tenant": slug, **head} for slug, _result, head in heads],
    }
    out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    typer.echo(f"checkpoint of {len(heads)} tenant(s) written to {out}")


def _read_checkpoint(path: Path) -> dict[str, audit.Checkpoint]:
    """The heads of a checkpoint file, by tenant id; one line and exit 2 if it is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a {CHECKPOINT_FORMAT} file")
        heads = [audit.Checkpoint.from_json(head) for head in document.get("heads") or []]
    except (OSError, ValueError) as error:
        fail(f"{path}: {error}", code=2)
        raise  # unreachable
    return {head.tenant_id: head for head in heads}
