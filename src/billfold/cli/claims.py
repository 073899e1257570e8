"""`billfold claims ...`: issue and revoke claim codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.catalog.catalog import Catalog
from billfold.claims import service as claims
from billfold.claims.export import batch_metadata, csv_of
from billfold.cli.common import DEFAULT_TENANT, TenantOption, fail, in_tenant, load_settings, moment
from billfold.kit.context import Context
from billfold.wallets.records import DEFAULT_PRIORITY

app = typer.Typer(help="Claim codes: issue and revoke.", no_args_is_help=True)


def _value(text: str | None) -> Any:
    """`--value`: JSON (`20`, `true`, `'["beta_*"]'`), or else the text itself
    (`unlimited`)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _metadata(pairs: list[str] | None) -> dict[str, str]:
    metadata: dict[str, str] = {}
    for pair in pairs or []:
        key, sign, value = pair.partition("=")
        if not sign or not key:
            fail(f"--meta {pair!r}: expected KEY=VALUE, e.g. --meta pledge=early-bird")
        metadata[key] = value
    return metadata


def _credit(
    unit: str | None, amount: int | None, expires_in_days: int | None, priority: int
) -> claims.WalletCredit | None:
    """`--credit-*`: the wallet credit of each redemption, or None when none is asked."""
    if unit is None and amount is None:
        if expires_in_days is not None or priority != DEFAULT_PRIORITY:
            fail(
                "--credit-expires-in-days and --credit-priority "
                "need --credit-unit and --credit-amount"
            )
        return None
    if unit is None or amount is None:
        fail("wallet credit needs both --credit-unit and --credit-amount")
    return claims.WalletCredit(unit, amount, expires_in_days, priority)


@app.command("create")
def claims_create(
    count: Annotated[int, typer.Option(help="how many codes to issue")],
    duration: Annotated[str, typer.Option(help='"365d" or "lifetime"')],
    plan: Annotated[str | None, typer.Option(help="the plan a code grants")] = None,
    feature: Annotated[
        str | None, typer.Option(help="or one feature a code grants, e.g. devmode.enabled")
    ] = None,
    value: Annotated[
        str | None,
        typer.Option(help="the feature's value as JSON (20, true, '[\"beta_*\"]') or unlimited"),
    ] = None,
    max_redemptions: Annotated[int, typer.Option(help="customers each code serves")] = 1,
    expires: Annotated[str | None, typer.Option(help="last day to redeem, e.g. 2027-06-30")] = None,
    source: Annotated[str, typer.Option(help="kept on the grants the codes make")] = "claim",
    campaign: Annotated[str | None, typer.Option(help="campaign name, kept with the batch")] = None,
    tier: Annotated[str | None, typer.Option(help="tier label, kept with the batch")] = None,
    meta: Annotated[
        list[str] | None,
        typer.Option(help="more metadata, KEY=VALUE, repeatable (at most 20 keys, 4 KB)"),
    ] = None,
    credit_unit: Annotated[
        str | None, typer.Option(help="wallet credit each redemption adds: its unit (credits, USD)")
    ] = None,
    credit_amount: Annotated[
        int | None, typer.Option(help="the credit's amount, in the unit's minor units")
    ] = None,
    credit_expires_in_days: Annotated[
        int | None, typer.Option(help="the credit expires this many days after the redemption")
    ] = None,
    credit_priority: Annotated[
        int, typer.Option(help="the credit's lot priority (lower is drawn first)")
    ] = DEFAULT_PRIORITY,
    output: Annotated[Path | None, typer.Option(help="write the CSV here, not to stdout")] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Issue claim codes as CSV: each grants a plan (--plan) or one feature (--feature,
    with --value unless it is boolean), and/or wallet credit (--credit-unit with
    --credit-amount). The codes are shown only this once."""
    extra = _metadata(meta)
    credit = _credit(credit_unit, credit_amount, credit_expires_in_days, credit_priority)

    async def work(session: AsyncSession, ctx: Context, catalog: Catalog) -> str:
        batch, issued = await claims.create_batch(
            session,
            ctx,
            catalog,
            claims.BatchRequest(
                plan=plan,
                feature=feature,
                value=_value(value),
                count=count,
                duration_days=claims.parse_duration(duration),
                max_redemptions=max_redemptions,
                expires_at=moment(expires, end_of_day=True),
                source=source,
                metadata=batch_metadata(campaign, tier, extra),
                wallet_credit=credit,
            ),
            secret_key=load_settings().secret_key,
        )
        return csv_of(batch, issued)

    text = in_tenant(tenant, work)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {count} codes to {output}", err=True)


@app.command("revoke")
def claims_revoke(
    batch: Annotated[str | None, typer.Option(help="revoke every code of a batch")] = None,
    code: Annotated[str | None, typer.Option(help="revoke one code")] = None,
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Revoke one claim code or a whole batch: they cannot be redeemed any more."""
    if (batch is None) == (code is None):
        fail("give exactly one of --batch and --code")

    async def work(session: AsyncSession, ctx: Context, _catalog: Catalog) -> int:
        if batch is not None:
            return await claims.revoke_batch(session, ctx, batch)
        assert code is not None
        return await claims.revoke_code(
            session, ctx, code=code, secret_key=load_settings().secret_key
        )

    typer.echo(f"revoked {in_tenant(tenant, work)} code(s)")
