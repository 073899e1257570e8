"""All of the ledger's SQL."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    String,
    Text,
    and_,
    any_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.db import Record
from billfold.kit.sql import dialect_insert
from billfold.ledger.tables import ledger_accounts, ledger_transfers

# The statements every transfer sends, built once so that each call is a hit in
# SQLAlchemy's compiled cache (a statement built per call costs its cache key again).
# On PostgreSQL a list of ids is one array parameter (`= ANY(:ids)`) and a group's
# transfers are inserted from arrays (`unnest`): the SQL is the same text whatever the
# count, so it is prepared once per connection and nothing is rendered per call.
_PG_IDS = bindparam("ids", type_=ARRAY(String))
_SQLITE_IDS: Any = bindparam("ids", expanding=True)


def _by_backend(make: Any) -> dict[str, Any]:
    return {"postgresql": make(_PG_IDS, True), "sqlite": make(_SQLITE_IDS, False)}


def _among(column: Any, ids: Any, postgres: bool) -> Any:
    return column == any_(ids) if postgres else column.in_(ids)


_LOCK = _by_backend(
    lambda ids, pg: (
        select(ledger_accounts)
        .where(
            ledger_accounts.c.tenant_id == bindparam("tenant_id"),
            _among(ledger_accounts.c.id, ids, pg),
        )
        .order_by(ledger_accounts.c.id)
        .with_for_update()
    )
)
_BY_IDS = _by_backend(
    lambda ids, pg: select(ledger_transfers).where(
        ledger_transfers.c.tenant_id == bindparam("tenant_id"),
        _among(ledger_transfers.c.id, ids, pg),
    )
)
_RESOLVED = _by_backend(
    lambda ids, pg: select(ledger_transfers.c.pending_id).where(
        ledger_transfers.c.tenant_id == bindparam("tenant_id"),
        _among(ledger_transfers.c.pending_id, ids, pg),
    )
)
# SQLite: one row per execution (executemany: "insertmanyvalues" sends them as one
# statement). PostgreSQL: one array per column.
_INSERT_SQLITE = (
    sqlite.insert(ledger_transfers).on_conflict_do_nothing().returning(ledger_transfers.c.id)
)
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("tenant_id", "varchar"),
    ("id", "varchar"),
    ("kind", "varchar"),
    ("debit_account_id", "varchar"),
    ("credit_account_id", "varchar"),
    ("amount", "bigint"),
    ("unit", "varchar"),
    ("pending_id", "varchar"),
    ("timeout_s", "bigint"),
    ("expires_at", "timestamptz"),
    ("code", "varchar"),
    ("metadata", "text"),
    ("created_at", "timestamptz"),
)
_ARRAY_TYPES: dict[str, Any] = {
    "varchar": ARRAY(String),
    "bigint": ARRAY(BigInteger),
    "timestamptz": ARRAY(DateTime(timezone=True)),
    "text": ARRAY(Text),
}
_UNNEST_INSERT = (
    "INSERT INTO ledger_transfers (tenant_id, id, kind, debit_account_id, credit_account_id, "
    "amount, unit, pending_id, timeout_s, expires_at, code, metadata, created_at) "
    "SELECT r.tenant_id, r.id, r.kind, r.debit_account_id, r.credit_account_id, r.amount, "
    "r.unit, r.pending_id, r.timeout_s, r.expires_at, r.code, CAST(r.metadata AS jsonb), "
    "r.created_at "
    "FROM unnest(CAST(:tenant_id AS varchar[]), CAST(:id AS varchar[]), "
    "CAST(:kind AS varchar[]), CAST(:debit_account_id AS varchar[]), "
    "CAST(:credit_account_id AS varchar[]), CAST(:amount AS bigint[]), "
    "CAST(:unit AS varchar[]), CAST(:pending_id AS varchar[]), CAST(:timeout_s AS bigint[]), "
    "CAST(:expires_at AS timestamptz[]), CAST(:code AS varchar[]), CAST(:metadata AS text[]), "
    "CAST(:created_at AS timestamptz[])) "
    "AS r(tenant_id, id, kind, debit_account_id, credit_account_id, amount, unit, pending_id, "
    "timeout_s, expires_at, code, metadata, created_at) "
    "ON CONFLICT DO NOTHING RETURNING id"
)
_INSERT_BINDS = [bindparam(name, type_=_ARRAY_TYPES[kind]) for name, kind in _COLUMNS]
_INSERT_PG = text(_UNNEST_INSERT).bindparams(*_INSERT_BINDS)
# A group's whole write in one statement: its transfers, and its accounts' balances.
_BALANCE_COLUMNS = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")
_WRITE_PG = text(
    "WITH inserted AS ("  # noqa: S608 (constant text: no value is formatted into it)
    + _UNNEST_INSERT
    + "), saved AS (UPDATE ledger_accounts AS a SET debits_posted = v.debits_posted, "
    "credits_posted = v.credits_posted, debits_pending = v.debits_pending, "
    "credits_pending = v.credits_pending "
    "FROM unnest(CAST(:account_id AS varchar[]), CAST(:debits_posted AS bigint[]), "
    "CAST(:credits_posted AS bigint[]), CAST(:debits_pending AS bigint[]), "
    "CAST(:credits_pending AS bigint[])) "
    "AS v(id, debits_posted, credits_posted, debits_pending, credits_pending) "
    "WHERE a.id = v.id) "
    "SELECT id FROM inserted"
).bindparams(
    *_INSERT_BINDS,
    bindparam("account_id", type_=ARRAY(String)),
    *(bindparam(name, type_=ARRAY(BigInteger)) for name in _BALANCE_COLUMNS),
)
# The accounts locked, and which of the given transfer ids are stored, in one round trip
# (PostgreSQL). The ids are read with the statement's snapshot, taken before any wait
# for a lock: an id committed during the wait is not seen here, and the group's insert
# finds it taken instead (and the group is worked out again).
_STORED_IDS = (
    select(func.array_agg(ledger_transfers.c.id))
    .where(
        ledger_transfers.c.tenant_id == bindparam("tenant_id"),
        ledger_transfers.c.id == any_(bindparam("transfer_ids", type_=ARRAY(String))),
    )
    .scalar_subquery()
)
_LOCK_AND_FIND = (
    select(ledger_accounts, _STORED_IDS.label("stored_ids"))
    .where(
        ledger_accounts.c.tenant_id == bindparam("tenant_id"),
        ledger_accounts.c.id == any_(_PG_IDS),
    )
    .order_by(ledger_accounts.c.id)
    .with_for_update(of=ledger_accounts)
)
_BALANCES = (
    update(ledger_accounts)
    .where(ledger_accounts.c.id == bindparam("_id"))
    .values(
        debits_posted=bindparam("_debits_posted"),
        credits_posted=bindparam("_credits_posted"),
        debits_pending=bindparam("_debits_pending"),
        credits_pending=bindparam("_credits_pending"),
    )
)


async def insert_account(session: AsyncSession, row: Mapping[str, Any]) -> None:
    """Insert the account unless the tenant has one with its code already."""
    statement = (
        dialect_insert(session, ledger_accounts)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["tenant_id", "code"])
    )
    await session.execute(statement)


async def account_by_code(session: AsyncSession, tenant_id: str, code: str) -> Record | None:
    statement = select(ledger_accounts).where(
        ledger_accounts.c.tenant_id == tenant_id, ledger_accounts.c.code == code
    )
    return (await session.execute(statement)).first()


async def account_by_id(session: AsyncSession, tenant_id: str, account_id: str) -> Record | None:
    statement = select(ledger_accounts).where(
        ledger_accounts.c.tenant_id == tenant_id, ledger_accounts.c.id == account_id
    )
    return (await session.execute(statement)).first()


async def lock_accounts(
    session: AsyncSession, tenant_id: str, account_ids: Collection[str]
) -> list[Record]:
    """The tenant's accounts among `account_ids`, locked for update in id order: every
    writer takes its locks in that one order, so two never wait on each other in a
    circle (decision 0039). SQLite has no row locks; its writers queue on the database
    lock (`BEGIN IMMEDIATE`) instead."""
    if not account_ids:
        return []
    parameters = {"tenant_id": tenant_id, "ids": sorted(account_ids)}
    return list((await session.execute(_LOCK[_backend(session)], parameters)).all())


async def save_balances(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write accounts' four balances (the caller holds their locks), in id order."""
    if rows:
        ordered = sorted(rows, key=lambda row: str(row["id"]))
        await session.execute(_BALANCES, [{f"_{k}": v for k, v in row.items()} for row in ordered])


async def transfers_by_ids(
    session: AsyncSession, tenant_id: str, ids: Collection[str]
) -> list[Record]:
    if not ids:
        return []
    parameters = {"tenant_id": tenant_id, "ids": sorted(ids)}
    return list((await session.execute(_BY_IDS[_backend(session)], parameters)).all())


async def resolved(session: AsyncSession, tenant_id: str, pending_ids: Collection[str]) -> set[str]:
    """Which of these pending transfers have been posted, voided or expired."""
    if not pending_ids:
        return set()
    parameters = {"tenant_id": tenant_id, "ids": sorted(pending_ids)}
    return set((await session.execute(_RESOLVED[_backend(session)], parameters)).scalars())


async def insert_transfers(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> set[str]:
    """Insert the transfers in id order, skipping any whose id (or whose pending
    transfer's resolution) another transaction wrote first; returns the ids inserted.
    In id order, so that two batches waiting on each other's uncommitted ids never wait
    in a circle."""
    if not rows:
        return set()
    ordered = sorted(rows, key=lambda row: str(row["id"]))
    if _backend(session) == "sqlite":
        return set((await session.execute(_INSERT_SQLITE, ordered)).scalars())
    return set((await session.execute(_INSERT_PG, _arrays(ordered))).scalars())


async def lock_and_find(
    session: AsyncSession, tenant_id: str, account_ids: Collection[str], ids: Collection[str]
) -> tuple[list[Record], set[str]] | None:
    """PostgreSQL: `lock_accounts`, and which of `ids` are stored (as of the statement's
    start), in one round trip. None on SQLite, or when no account is found."""
    if _backend(session) != "postgresql" or not account_ids:
        return None
    parameters = {"tenant_id": tenant_id, "ids": sorted(account_ids), "transfer_ids": list(ids)}
    rows = list((await session.execute(_LOCK_AND_FIND, parameters)).all())
    if not rows:
        return None
    return rows, set(rows[0].stored_ids or ())


async def write_group(
    session: AsyncSession,
    rows: Sequence[Mapping[str, Any]],
    balances: Sequence[Mapping[str, Any]],
) -> set[str]:
    """`insert_transfers` and `save_balances` together (one statement on PostgreSQL):
    the balances are written even if an insert was skipped, so the caller must roll the
    transaction back then (a group's)."""
    if _backend(session) != "postgresql":
        inserted = await insert_transfers(session, rows)
        await save_balances(session, balances)
        return inserted
    ordered = sorted(rows, key=lambda row: str(row["id"]))
    parameters = _arrays(ordered)
    saved = sorted(balances, key=lambda row: str(row["id"]))
    parameters["account_id"] = [row["id"] for row in saved]
    for name in _BALANCE_COLUMNS:
        parameters[name] = [row[name] for row in saved]
    return set((await session.execute(_WRITE_PG, parameters)).scalars())


def _arrays(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Transfer rows as one list per column, for `unnest`."""
    columns: dict[str, list[Any]] = {name: [] for name, _ in _COLUMNS}
    for row in rows:
        for name, values in columns.items():
            value = row[name]
            if name == "metadata" and value is not None:
                value = json.dumps(value)
            values.append(value)
    return columns


def _backend(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def transfer_by_id(session: AsyncSession, tenant_id: str, transfer_id: str) -> Record | None:
    rows = await transfers_by_ids(session, tenant_id, [transfer_id])
    return rows[0] if rows else None


async def accounts_page(
    session: AsyncSession, tenant_id: str, *, code: str | None, after: str | None, limit: int
) -> list[Record]:
    """The tenant's accounts in id order, after the id `after`, up to `limit`."""
    statement = select(ledger_accounts).where(ledger_accounts.c.tenant_id == tenant_id)
    if code is not None:
        statement = statement.where(ledger_accounts.c.code == code)
    if after is not None:
        statement = statement.where(ledger_accounts.c.id > after)
    statement = statement.order_by(ledger_accounts.c.id).limit(limit)
    return list((await session.execute(statement)).all())


async def transfers_of_account(
    session: AsyncSession,
    tenant_id: str,
    account_id: str,
    *,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Record]:
    """The transfers that debit or credit the account, oldest first (by `created_at`,
    then id), after the (created_at, id) `after`, up to `limit`."""
    t = ledger_transfers
    statement = select(t).where(
        t.c.tenant_id == tenant_id,
        or_(t.c.debit_account_id == account_id, t.c.credit_account_id == account_id),
    )
    if after is not None:
        at, after_id = after
        statement = statement.where(
            or_(t.c.created_at > at, and_(t.c.created_at == at, t.c.id > after_id))
        )
    statement = statement.order_by(t.c.created_at, t.c.id).limit(limit)
    return list((await session.execute(statement)).all())


async def expired_pending(
    session: AsyncSession, tenant_id: str, now: datetime, limit: int
) -> list[Record]:
    """Pending transfers of the tenant whose timeout has passed and that nothing has
    resolved yet, oldest timeout first."""
    resolution = ledger_transfers.alias("resolution")
    statement = (
        select(ledger_transfers)
        .outerjoin(
            resolution,
            and_(
                resolution.c.tenant_id == ledger_transfers.c.tenant_id,
                resolution.c.pending_id == ledger_transfers.c.id,
            ),
        )
        .where(
            ledger_transfers.c.tenant_id == tenant_id,
            ledger_transfers.c.kind == "pending",
            ledger_transfers.c.expires_at <= now,
            resolution.c.id.is_(None),
        )
        .order_by(ledger_transfers.c.expires_at, ledger_transfers.c.id)
        .limit(limit)
    )
    return list((await session.execute(statement)).all())


async def accounts(session: AsyncSession, tenant_id: str | None) -> list[Record]:
    statement = select(ledger_accounts).order_by(ledger_accounts.c.id)
    if tenant_id is not None:
        statement = statement.where(ledger_accounts.c.tenant_id == tenant_id)
    return list((await session.execute(statement)).all())


async def count_transfers(session: AsyncSession, tenant_id: str | None) -> int:
    statement = select(func.count()).select_from(ledger_transfers)
    if tenant_id is not None:
        statement = statement.where(ledger_transfers.c.tenant_id == tenant_id)
    return int((await session.execute(statement)).scalar_one())


async def recomputed_balances(
    session: AsyncSession, tenant_id: str | None
) -> dict[str, tuple[int, int, int, int]]:
    """Each account's (debits_posted, credits_posted, debits_pending, credits_pending) as
    the transfers add up, by account id. Posted: plain transfers and posts. Pending: the
    pending transfers that nothing has resolved."""
    t = ledger_transfers
    resolution = t.alias("resolution")
    open_pending = and_(t.c.kind == "pending", resolution.c.id.is_(None))
    posted = t.c.kind.in_(("posted", "post"))
    base = select(t).outerjoin(
        resolution, and_(resolution.c.tenant_id == t.c.tenant_id, resolution.c.pending_id == t.c.id)
    )
    if tenant_id is not None:
        base = base.where(t.c.tenant_id == tenant_id)
    zero = literal(0)

    def side(account: Any, debit: bool) -> Any:
        amount_posted = case((posted, t.c.amount), else_=0)
        amount_pending = case((open_pending, t.c.amount), else_=0)
        return base.with_only_columns(
            account.label("account_id"),
            (amount_posted if debit else zero).label("dp"),
            (zero if debit else amount_posted).label("cp"),
            (amount_pending if debit else zero).label("dn"),
            (zero if debit else amount_pending).label("cn"),
        )

    moves = union_all(
        side(t.c.debit_account_id, True), side(t.c.credit_account_id, False)
    ).subquery()
    statement = select(
        moves.c.account_id,
        func.sum(moves.c.dp),
        func.sum(moves.c.cp),
        func.sum(moves.c.dn),
        func.sum(moves.c.cn),
    ).group_by(moves.c.account_id)
    return {
        row[0]: (int(row[1]), int(row[2]), int(row[3]), int(row[4]))
        for row in (await session.execute(statement)).all()
    }


async def transfers_across_units(session: AsyncSession, tenant_id: str | None) -> list[Record]:
    """Transfers whose unit is not both of their accounts' unit (none, normally)."""
    t = ledger_transfers
    debit = ledger_accounts.alias("debit")
    credit = ledger_accounts.alias("credit")
    statement = (
        select(t.c.tenant_id, t.c.id, t.c.unit, debit.c.unit, credit.c.unit)
        .join(debit, debit.c.id == t.c.debit_account_id)
        .join(credit, credit.c.id == t.c.credit_account_id)
        .where((debit.c.unit != t.c.unit) | (credit.c.unit != t.c.unit))
        .order_by(t.c.tenant_id, t.c.id)
    )
    if tenant_id is not None:
        statement = statement.where(t.c.tenant_id == tenant_id)
    return list((await session.execute(statement)).all())
