"""Reading the ledger a page at a time: accounts in id order, and an account's transfers
oldest first. A cursor is opaque to the client (kit.schemas.encode_cursor)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.context import Context
from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.schemas import decode_cursor, encode_cursor
from billfold.ledger import repository
from billfold.ledger.records import Account, AccountNotFound, Transfer

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


async def accounts(
    session: AsyncSession, ctx: Context, *, code: str | None, cursor: str | None, limit: int
) -> Page[Account]:
    rows = await repository.accounts_page(
        session, ctx.tenant_id, code=code, after=decode_cursor(cursor), limit=limit + 1
    )
    found = [Account.of(row) for row in rows[:limit]]
    more = len(rows) > limit
    return Page(found, encode_cursor(found[-1].id) if more and found else None)


async def transfers_of(
    session: AsyncSession, ctx: Context, account_id: str, *, cursor: str | None, limit: int
) -> Page[Transfer]:
    """The transfers that debit or credit the account, oldest first."""
    if await repository.account_by_id(session, ctx.tenant_id, account_id) is None:
        raise AccountNotFound(f"no ledger account {account_id!r}")
    rows = await repository.transfers_of_account(
        session, ctx.tenant_id, account_id, after=_position(cursor), limit=limit + 1
    )
    found = [Transfer.of(row) for row in rows[:limit]]
    more = len(rows) > limit
    last = found[-1] if more and found else None
    return Page(
        found, None if last is None else encode_cursor(f"{last.created_at.isoformat()} {last.id}")
    )


def _position(cursor: str | None) -> tuple[datetime, str] | None:
    decoded = decode_cursor(cursor)
    if decoded is None:
        return None
    at, _, transfer_id = decoded.partition(" ")
    try:
        when = datetime.fromisoformat(at)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or not transfer_id:
        raise InvalidInput(
            "the cursor is not valid",
            errors=[FieldError("not a cursor we issued", parameter="cursor")],
        )
    return when, transfer_id
