"""Dead letters of `billfold worker ingest` (decision 0024): a usage event that the store
or the checks refused, or a message that does not even decode, parked in
`ingest_dead_letters` so the worker goes on with the rest, for an operator to read,
replay or drop (`billfold worker dead-letters`). All of its SQL is here."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.db import Record
from billfold.kit.text import text_fault
from billfold.metering.tables import ingest_dead_letters as letters

EVENT, MESSAGE = "event", "message"
ERROR_LENGTH = 500


@dataclass(frozen=True)
class Letter:
    """One thing to park: an event of a message (`raw` its ASCII JSON) or a whole message
    that did not decode (`raw` its bytes in base64)."""

    kind: str
    tenant_id: str | None
    message_id: str | None
    raw: str
    error: str
    idempotency_key: str | None = None
    correlation_id: str | None = None
    received_at: datetime | None = None

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.kind}\n{self.tenant_id}\n{self.raw}".encode()).hexdigest()


def event_letter(
    *,
    tenant_id: str,
    message_id: str | None,
    received_at: datetime,
    correlation_id: str | None,
    raw: Any,
    error: str,
) -> Letter:
    """An event parked as sent: ASCII JSON keeps a NUL or a lone surrogate as an escape."""
    key = raw.get("idempotency_key") if isinstance(raw, dict) else None
    return Letter(
        kind=EVENT,
        tenant_id=tenant_id,
        message_id=readable(message_id, 300),
        raw=json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=True),
        error=readable(error, ERROR_LENGTH) or "",
        idempotency_key=readable(key, 255),
        correlation_id=readable(correlation_id, 255),
        received_at=received_at,
    )


def message_letter(data: bytes, *, message_id: str | None, error: str) -> Letter:
    return Letter(
        kind=MESSAGE,
        tenant_id=None,
        message_id=readable(message_id, 300),
        raw=base64.b64encode(data).decode("ascii"),
        error=readable(error, ERROR_LENGTH) or "",
    )


def raw_event(row: Record) -> Any:
    return json.loads(row.raw)


def raw_message(row: Record) -> bytes:
    return base64.b64decode(row.raw)


def readable(value: Any, limit: int) -> str | None:
    """`value` as text any backend stores (a NUL or a lone surrogate escaped), cut to
    `limit` characters."""
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    if text_fault(text) is not None:
        text = text.encode("unicode_escape").decode("ascii")
    return text[:limit]


async def park(session: AsyncSession, letter: Letter, now: datetime) -> None:
    """Park `letter`; the same one parked before counts one more attempt instead."""
    dialect = session.get_bind().dialect.name
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(letters).values(
        fingerprint=letter.fingerprint,
        kind=letter.kind,
        tenant_id=letter.tenant_id,
        message_id=letter.message_id,
        idempotency_key=letter.idempotency_key,
        correlation_id=letter.correlation_id,
        received_at=letter.received_at,
        raw=letter.raw,
        error=letter.error,
        first_seen_at=now,
        last_seen_at=now,
        attempts=1,
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[letters.c.fingerprint],
            set_={
                "attempts": letters.c.attempts + 1,
                "last_seen_at": now,
                "error": statement.excluded.error,
            },
        )
    )


async def listing(session: AsyncSession, *, limit: int) -> Sequence[Record]:
    return (await session.execute(select(letters).order_by(letters.c.id).limit(limit))).all()


async def ids(session: AsyncSession) -> list[int]:
    return [int(i) for i in (await session.scalars(select(letters.c.id).order_by(letters.c.id)))]


async def get(session: AsyncSession, letter_id: int) -> Record | None:
    return (await session.execute(select(letters).where(letters.c.id == letter_id))).one_or_none()


async def drop(session: AsyncSession, letter_id: int) -> bool:
    result = await session.execute(delete(letters).where(letters.c.id == letter_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def failed_again(session: AsyncSession, letter_id: int, error: str, now: datetime) -> None:
    await session.execute(
        update(letters)
        .where(letters.c.id == letter_id)
        .values(
            attempts=letters.c.attempts + 1,
            last_seen_at=now,
            error=readable(error, ERROR_LENGTH),
        )
    )


async def waiting(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(letters))).scalar_one())
