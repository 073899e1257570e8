"""All of the wallets domain's SQL. A lot's balance is read from its ledger account."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.db import Record
from billfold.kit.sql import dialect_insert
from billfold.ledger.tables import ledger_accounts, ledger_transfers
from billfold.wallets.tables import (
    wallet_holds,
    wallet_lots,
    wallet_spends,
    wallet_top_ups,
    wallets,
)

a = ledger_accounts
lots = wallet_lots
# What a lot still holds that nothing has taken or reserved.
REMAINING = a.c.credits_posted - a.c.debits_posted - a.c.debits_pending


async def insert_wallet(session: AsyncSession, row: Mapping[str, Any]) -> None:
    statement = (
        dialect_insert(session, wallets)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["tenant_id", "customer_id", "unit"])
    )
    await session.execute(statement)


async def wallet_of(
    session: AsyncSession, tenant_id: str, customer_id: str, unit: str, *, lock: bool
) -> Record | None:
    """The customer's wallet in `unit`; with `lock`, locked until the transaction ends
    (SQLite: its writers queue on the database lock instead)."""
    statement = select(wallets).where(
        wallets.c.tenant_id == tenant_id,
        wallets.c.customer_id == customer_id,
        wallets.c.unit == unit,
    )
    if lock:
        statement = statement.with_for_update()
    return (await session.execute(statement)).first()


async def wallet_by_id(
    session: AsyncSession, tenant_id: str, wallet_id: str, *, lock: bool
) -> Record | None:
    statement = select(wallets).where(wallets.c.tenant_id == tenant_id, wallets.c.id == wallet_id)
    if lock:
        statement = statement.with_for_update()
    return (await session.execute(statement)).first()


async def wallets_of_customer(
    session: AsyncSession, tenant_id: str, customer_id: str
) -> list[Record]:
    statement = (
        select(wallets)
        .where(wallets.c.tenant_id == tenant_id, wallets.c.customer_id == customer_id)
        .order_by(wallets.c.unit)
    )
    return list((await session.execute(statement)).all())


async def set_alert(
    session: AsyncSession, wallet_id: str, alert: str, low_balance: int | None, now: datetime
) -> None:
    await session.execute(
        update(wallets)
        .where(wallets.c.id == wallet_id)
        .values(alert=alert, low_balance=low_balance, updated_at=now)
    )


async def lot_by_reference(
    session: AsyncSession, tenant_id: str, source: str, reference: str
) -> Record | None:
    statement = select(lots).where(
        lots.c.tenant_id == tenant_id, lots.c.source == source, lots.c.reference == reference
    )
    return (await session.execute(statement)).first()


async def lot_by_id(session: AsyncSession, tenant_id: str, lot_id: str) -> Record | None:
    statement = select(lots).where(lots.c.tenant_id == tenant_id, lots.c.id == lot_id)
    return (await session.execute(statement)).first()


async def insert_lot(session: AsyncSession, row: Mapping[str, Any]) -> bool:
    """Insert the lot unless its (source, reference) is taken; whether it was inserted."""
    statement = (
        dialect_insert(session, lots)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["tenant_id", "source", "reference"])
        .returning(lots.c.id)
    )
    return (await session.execute(statement)).first() is not None


def _order() -> tuple[Any, ...]:
    """The consumption order: lowest priority number first, then earliest expiry (lots
    that never expire last), then oldest, then id (docs/wallets.md)."""
    return (
        lots.c.priority,
        case((lots.c.expires_at.is_(None), 1), else_=0),
        lots.c.expires_at,
        lots.c.created_at,
        lots.c.id,
    )


def _live(now: datetime) -> Any:
    return or_(lots.c.expires_at.is_(None), lots.c.expires_at > now)


async def drawable_lots(
    session: AsyncSession, wallet_id: str, now: datetime, limit: int
) -> list[Record]:
    """The wallet's live lots with something left, in consumption order, each with what
    remains (`remaining`) and its ledger account."""
    statement = (
        select(lots.c.id, lots.c.account_id, REMAINING.label("remaining"))
        .join(a, a.c.id == lots.c.account_id)
        .where(lots.c.wallet_id == wallet_id, _live(now), REMAINING > 0)
        .order_by(*_order())
        .limit(limit)
    )
    return list((await session.execute(statement)).all())


async def totals(session: AsyncSession, wallet_id: str, now: datetime) -> tuple[int, int]:
    """(posted, held) over the wallet's live lots."""
    statement = (
        select(
            func.coalesce(func.sum(a.c.credits_posted - a.c.debits_posted), 0),
            func.coalesce(func.sum(a.c.debits_pending), 0),
        )
        .select_from(lots.join(a, a.c.id == lots.c.account_id))
        .where(lots.c.wallet_id == wallet_id, _live(now))
    )
    posted, held = (await session.execute(statement)).one()
    return int(posted), int(held)


async def expired_lots(
    session: AsyncSession, tenant_id: str, now: datetime, limit: int
) -> list[Record]:
    """Lots past their expiry that still hold posted credit nothing has reserved, with
    their wallet and what their account has been debited so far."""
    statement = (
        select(
            lots.c.id,
            lots.c.wallet_id,
            lots.c.account_id,
            REMAINING.label("remaining"),
            a.c.debits_posted,
        )
        .join(a, a.c.id == lots.c.account_id)
        .where(lots.c.tenant_id == tenant_id, lots.c.expires_at <= now, REMAINING > 0)
        .order_by(lots.c.expires_at, lots.c.id)
        .limit(limit)
    )
    return list((await session.execute(statement)).all())


async def lot_remaining(session: AsyncSession, lot_id: str) -> tuple[int, int]:
    """(remaining, debits_posted) of a lot's account, as it stands."""
    statement = (
        select(REMAINING, a.c.debits_posted)
        .select_from(lots.join(a, a.c.id == lots.c.account_id))
        .where(lots.c.id == lot_id)
    )
    remaining, debited = (await session.execute(statement)).one()
    return int(remaining), int(debited)


async def spend_by_reference(
    session: AsyncSession, tenant_id: str, reference: str
) -> Record | None:
    statement = select(wallet_spends).where(
        wallet_spends.c.tenant_id == tenant_id, wallet_spends.c.reference == reference
    )
    return (await session.execute(statement)).first()


async def insert_spend(session: AsyncSession, row: Mapping[str, Any]) -> None:
    await session.execute(dialect_insert(session, wallet_spends).values(**row))


async def hold_by_client_id(session: AsyncSession, tenant_id: str, hold_id: str) -> Record | None:
    statement = select(wallet_holds).where(
        wallet_holds.c.tenant_id == tenant_id, wallet_holds.c.hold_id == hold_id
    )
    return (await session.execute(statement)).first()


async def insert_hold(session: AsyncSession, row: Mapping[str, Any]) -> None:
    await session.execute(dialect_insert(session, wallet_holds).values(**row))


async def resolve_hold(
    session: AsyncSession,
    hold_row_id: str,
    *,
    status: str,
    settled_amount: int | None,
    resolution: Mapping[str, Any],
    now: datetime,
) -> None:
    await session.execute(
        update(wallet_holds)
        .where(wallet_holds.c.id == hold_row_id)
        .values(
            status=status,
            settled_amount=settled_amount,
            resolution=dict(resolution),
            resolved_at=now,
        )
    )


async def timed_out_holds(
    session: AsyncSession, tenant_id: str, now: datetime, limit: int
) -> list[Record]:
    statement = (
        select(wallet_holds)
        .where(
            wallet_holds.c.tenant_id == tenant_id,
            wallet_holds.c.status == "held",
            wallet_holds.c.expires_at <= now,
        )
        .order_by(wallet_holds.c.expires_at, wallet_holds.c.id)
        .limit(limit)
    )
    return list((await session.execute(statement)).all())


async def top_up_by_reference(
    session: AsyncSession, tenant_id: str, reference: str
) -> Record | None:
    statement = select(wallet_top_ups).where(
        wallet_top_ups.c.tenant_id == tenant_id, wallet_top_ups.c.reference == reference
    )
    return (await session.execute(statement)).first()


async def top_up_by_id(
    session: AsyncSession, tenant_id: str, top_up_id: str, *, lock: bool
) -> Record | None:
    statement = select(wallet_top_ups).where(
        wallet_top_ups.c.tenant_id == tenant_id, wallet_top_ups.c.id == top_up_id
    )
    if lock:
        statement = statement.with_for_update()
    return (await session.execute(statement)).first()


async def insert_top_up(session: AsyncSession, row: Mapping[str, Any]) -> None:
    await session.execute(dialect_insert(session, wallet_top_ups).values(**row))


async def resolve_top_up(session: AsyncSession, top_up_id: str, values: Mapping[str, Any]) -> None:
    await session.execute(
        update(wallet_top_ups).where(wallet_top_ups.c.id == top_up_id).values(**values)
    )


async def transactions(
    session: AsyncSession,
    tenant_id: str,
    wallet_id: str,
    *,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[Record]:
    """The ledger transfers into and out of the wallet's lots, newest first, each with
    its lot and whether it debits the lot (out) or credits it (in). Keyset pagination on
    (created_at, id) of the transfer."""
    t = ledger_transfers
    statement = (
        select(
            t,
            lots.c.id.label("lot_id"),
            (t.c.debit_account_id == lots.c.account_id).label("outgoing"),
        )
        .join(
            lots,
            or_(
                t.c.debit_account_id == lots.c.account_id,
                t.c.credit_account_id == lots.c.account_id,
            ),
        )
        .where(t.c.tenant_id == tenant_id, lots.c.wallet_id == wallet_id)
        .order_by(t.c.created_at.desc(), t.c.id.desc())
        .limit(limit)
    )
    if before is not None:
        at, transfer_id = before
        statement = statement.where(
            or_(t.c.created_at < at, (t.c.created_at == at) & (t.c.id < transfer_id))
        )
    return list((await session.execute(statement)).all())


async def transfer_ids_stored(session: AsyncSession, tenant_id: str, ids: list[str]) -> set[str]:
    """Which of these ledger transfer ids are stored."""
    if not ids:
        return set()
    t = ledger_transfers
    statement = select(t.c.id).where(t.c.tenant_id == tenant_id, t.c.id.in_(sorted(ids)))
    return set((await session.execute(statement)).scalars())


async def tenants_with_expiry_due(session: AsyncSession, now: datetime) -> list[str]:
    """Tenants with a pending ledger transfer past its timeout, a hold past its timeout,
    or an expired lot that still holds credit."""
    t = ledger_transfers
    resolution = t.alias("resolution")
    pending = (
        select(t.c.tenant_id)
        .outerjoin(
            resolution,
            (resolution.c.tenant_id == t.c.tenant_id) & (resolution.c.pending_id == t.c.id),
        )
        .where(t.c.kind == "pending", t.c.expires_at <= now, resolution.c.id.is_(None))
    )
    held = select(wallet_holds.c.tenant_id).where(
        wallet_holds.c.status == "held", wallet_holds.c.expires_at <= now
    )
    expired = (
        select(lots.c.tenant_id)
        .join(a, a.c.id == lots.c.account_id)
        .where(lots.c.expires_at <= now, REMAINING > 0)
    )
    statement = pending.union(held, expired)
    return sorted(str(tenant_id) for tenant_id in (await session.execute(statement)).scalars())
