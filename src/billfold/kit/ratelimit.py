"""Fixed-window attempt counters kept in the database, so every API process shares them."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.kit.errors import RateLimited
from billfold.kit.sql import dialect_insert
from billfold.kit.tables import rate_limit_counters

# Keys up to this long are stored as given (the column holds 300); longer ones, and any
# that looks like a stored digest, by a readable head and the SHA-256 of the whole key.
MAX_PLAIN_KEY = 200
_DIGEST_MARK = "#sha256:"


def stored_key(key: str) -> str:
    """The form of `key` the counters table keeps: itself, or a head and a digest."""
    if len(key) <= MAX_PLAIN_KEY and _DIGEST_MARK not in key:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{key[:100]}{_DIGEST_MARK}{digest}"


async def hit(session: AsyncSession, key: str, *, limit: int, window_s: int, now: datetime) -> None:
    """Count one attempt under `key`; raise RateLimited once `limit` is passed in this window."""
    key = stored_key(key)
    epoch = int(now.timestamp())
    window_start = now - timedelta(seconds=epoch % window_s, microseconds=now.microsecond)
    statement = dialect_insert(session, rate_limit_counters).values(
        key=key, window_start=window_start, count=1
    )
    statement = statement.on_conflict_do_update(
        index_elements=["key", "window_start"],
        set_={"count": rate_limit_counters.c.count + 1},
    ).returning(rate_limit_counters.c.count)
    count = (await session.execute(statement)).scalar_one()
    if count == 1:
        # First hit of a new window: drop this key's older windows.
        await session.execute(
            delete(rate_limit_counters).where(
                rate_limit_counters.c.key == key,
                rate_limit_counters.c.window_start < window_start,
            )
        )
    if count > limit:
        retry_after_s = window_s - (epoch % window_s)
        raise RateLimited(
            f"too many attempts; try again in {retry_after_s} s",
            extra={"retry_after_s": retry_after_s},
            headers={"Retry-After": str(retry_after_s)},
        )
