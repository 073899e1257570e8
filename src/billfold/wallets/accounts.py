"""The shared chart of accounts the wallets domain touches (COMMON chart, docs/wallets.md):
each code is created on first use with the type the chart gives it, so that every domain
that names `cash:USD` or `breakage:credits` means the same account."""

from __future__ import annotations

from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.context import Context
from billfold.ledger import service as ledger
from billfold.ledger.records import Account, AccountType

# prefix -> type, for codes `prefix:{unit}` (and `receivable:{customer}:{unit}`).
CHART: Final[dict[str, AccountType]] = {
    "cash": "asset",
    "revenue": "revenue",
    "wallet_funding": "equity",
    "usage_revenue": "revenue",
    "breakage": "revenue",
    "receivable": "asset",
}
# The test book's codes are the chart's prefixed `test:`: a test-clock customer's wallet
# pays, and is credited from, its invoice's `test:receivable:{customer}:{unit}`
# (decision 0046).
TEST_BOOK: Final = "test:"


def lot_code(lot_id: str) -> str:
    return f"wallet:{lot_id}"


async def lot_account(session: AsyncSession, ctx: Context, lot_id: str, unit: str) -> Account:
    return await ledger.create_account(
        session,
        ctx,
        code=lot_code(lot_id),
        type="liability",
        unit=unit,
        rule="debits_must_not_exceed_credits",
    )


async def chart_account(session: AsyncSession, ctx: Context, code: str, unit: str) -> Account:
    """The account `code`: created if it is one of the chart's codes in `unit`
    (`cash:USD`, `usage_revenue:credits`, `test:receivable:cus_1:USD`, ...), otherwise it
    must exist already (`account_not_found`). Its unit is checked by the ledger when
    money moves."""
    prefix, _, rest = code.removeprefix(TEST_BOOK).partition(":")
    type = CHART.get(prefix)
    if type is not None and (
        rest == unit or (prefix == "receivable" and rest.endswith(f":{unit}"))
    ):
        return await ledger.create_account(session, ctx, code=code, type=type, unit=unit)
    return await ledger.account_by_code(session, ctx, code)
