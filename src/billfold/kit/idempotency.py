"""Idempotency keys: a retried mutation answers exactly what the first attempt answered.

A client sends `Idempotency-Key: <unique string>` with a mutation. Billfold records the
key and the request's fingerprint in the mutation's own transaction, and the answer with
it, so the key and the effect commit together or not at all. A retry with the same key
replays the stored answer (`Idempotent-Replayed: true`). Concurrent retries wait on the
key's row (PostgreSQL) or the write lock (SQLite) and then replay. The same key with a
different request is refused.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.errors import BillfoldError, Conflict, FieldError, InvalidInput
from billfold.kit.sql import dialect_insert
from billfold.kit.tables import idempotency_keys

HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")


class IdempotencyKeyReused(BillfoldError):
    """A key (an Idempotency-Key header, or a consume's `idempotency_key`) sent again with
    another request: one code, one status, one title wherever a key is reused."""

    status = 422
    code = "idempotency_key_reused"
    title = "This idempotency key was used for a different request"


class IdempotencyKeyInFlight(Conflict):
    code = "idempotency_key_in_flight"


class Replay(Exception):
    """Raised to answer a retry with the answer stored for its key."""

    def __init__(self, status_code: int, body: Any) -> None:
        super().__init__(status_code)
        self.status_code = status_code
        self.body = body


def fingerprint(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise InvalidInput(
            "the Idempotency-Key is not valid",
            errors=[FieldError("1 to 200 visible ASCII characters", parameter=HEADER)],
        )
    return key


async def claim(
    session: AsyncSession, tenant_id: str, key: str, print_: str, now: datetime
) -> None:
    """Take the key for this request, or raise Replay / a refusal if it was taken."""
    inserted = await session.execute(
        dialect_insert(session, idempotency_keys)
        .values(tenant_id=tenant_id, key=key, fingerprint=print_, created_at=now)
        .on_conflict_do_nothing(index_elements=["tenant_id", "key"])
        .returning(idempotency_keys.c.key)
    )
    if inserted.first() is not None:
        return
    row = (
        await session.execute(
            select(idempotency_keys).where(
                idempotency_keys.c.tenant_id == tenant_id, idempotency_keys.c.key == key
            )
        )
    ).one()
    if row.fingerprint != print_:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was first used with another request; use a new key",
            errors=[FieldError("already used for a different request", parameter=HEADER)],
        )
    if row.status_code is None:
        raise IdempotencyKeyInFlight("a request with this Idempotency-Key is still running")
    raise Replay(row.status_code, row.response)


async def remember(
    session: AsyncSession, tenant_id: str, key: str, status_code: int, body: Any
) -> None:
    await session.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.tenant_id == tenant_id, idempotency_keys.c.key == key)
        .values(status_code=status_code, response=body)
    )
