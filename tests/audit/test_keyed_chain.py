"""The chain is keyed and its heads are guarded: rewriting or cutting back the log needs
the secret key, and a checkpoint kept outside the database shows a truncated tail
(decision 0025)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from billfold.audit import service as audit
from billfold.cli.audit import _read_checkpoint
from billfold.kit import eventlog
from billfold.kit.context import Actor, Context
from billfold.kit.eventlog import GENESIS_HASH, entry_hash, hashed_fields
from tests.audit.test_audit import seed
from tests.conftest import Harness

pytestmark = pytest.mark.anyio

HEAD = "SELECT seq, hash, keyed_from, mac FROM event_chain_heads WHERE tenant_id = :t"


async def unguarded(session: AsyncSession, backend: str) -> None:
    """Lift every guard on the log and its heads, as an attacker with rights on the
    database would, inside the caller's transaction."""
    if backend == "postgresql":
        await session.execute(text("ALTER TABLE event_log DISABLE TRIGGER USER"))
        await session.execute(text("ALTER TABLE event_chain_heads DISABLE TRIGGER USER"))
    else:
        for trigger in (
            "event_log_no_update",
            "event_log_no_delete",
            "event_chain_heads_no_delete",
            "event_chain_heads_forward_only",
        ):
            await session.execute(text(f"DROP TRIGGER {trigger}"))


async def head_row(session: AsyncSession, tenant_id: str) -> dict[str, Any]:
    return dict((await session.execute(text(HEAD), {"t": tenant_id})).one()._mapping)


async def test_the_database_refuses_deleting_a_head_or_moving_it_back(harness: Harness) -> None:
    await seed(harness)
    for statement in (
        "DELETE FROM event_chain_heads WHERE tenant_id = :t",
        "UPDATE event_chain_heads SET seq = seq - 1 WHERE tenant_id = :t",
        "UPDATE event_chain_heads SET hash = :h WHERE tenant_id = :t",
        "UPDATE event_chain_heads SET mac = NULL WHERE tenant_id = :t",
        "UPDATE event_chain_heads SET keyed_from = NULL WHERE tenant_id = :t",
    ):
        async with harness.database.transaction() as session:
            with pytest.raises(DBAPIError, match="chain head"):
                await session.execute(text(statement), {"t": harness.tenant_id, "h": "0" * 64})


async def test_a_tail_cut_off_with_its_head_rolled_back_is_named(harness: Harness) -> None:
    """The attack that passed before: delete the newest entries and move the head back to
    the last one left. Without the key the head's MAC cannot follow."""
    await seed(harness)
    async with harness.database.transaction() as session:
        await unguarded(session, harness.backend)
        last = (
            await session.execute(
                text("SELECT hash FROM event_log WHERE tenant_id = :t AND seq = 10"),
                {"t": harness.tenant_id},
            )
        ).scalar_one()
        await session.execute(
            text("DELETE FROM event_log WHERE tenant_id = :t AND seq > 10"),
            {"t": harness.tenant_id},
        )
        await session.execute(
            text("UPDATE event_chain_heads SET seq = 10, hash = :h WHERE tenant_id = :t"),
            {"t": harness.tenant_id, "h": last},
        )
        broken = await audit.verify(session, harness.tenant_id)
        await session.rollback()
    assert (broken.ok, broken.entries, broken.seq) == (False, 10, 10)
    assert broken.problem is not None
    assert broken.problem.startswith("head: its MAC does not match"), broken.problem


async def test_a_checkpoint_shows_a_tail_cut_back_to_an_older_head(
    harness: Harness, tmp_path: Path
) -> None:
    """An attacker who kept an older head row (with its MAC) can put it back after
    cutting the tail: the head then verifies, but a checkpoint taken since does not."""
    await harness.post("/v1/customers/amy/grants", {"feature": "rag.enabled", "value": True})
    async with harness.database.transaction(write=False) as session:
        older = await head_row(session, harness.tenant_id)
    harness.clock.advance(timedelta(minutes=1))
    await harness.post("/v1/customers/amy/grants", {"feature": "spaces.max", "value": 9})
    async with harness.database.transaction(write=False) as session:
        result, checkpoint = await audit.checkpoint(session, harness.tenant_id)
    assert result.ok, result
    assert checkpoint.seq == older["seq"] + 1
    path = tmp_path / "checkpoint.json"
    heads = [{"tenant": "t", **checkpoint.as_json()}]
    path.write_text(json.dumps({"format": "billfold-audit-checkpoint/1", "heads": heads}))
    anchor = _read_checkpoint(path)[harness.tenant_id]

    async with harness.database.transaction() as session:
        assert (await audit.verify(session, harness.tenant_id, anchor)).ok
        await unguarded(session, harness.backend)
        await session.execute(
            text("DELETE FROM event_log WHERE tenant_id = :t AND seq > :s"),
            {"t": harness.tenant_id, "s": older["seq"]},
        )
        await session.execute(
            text(
                "UPDATE event_chain_heads SET seq = :seq, hash = :hash, keyed_from = "
                ":keyed_from, mac = :mac WHERE tenant_id = :t"
            ),
            {"t": harness.tenant_id, **older},
        )
        without = await audit.verify(session, harness.tenant_id)
        truncated = await audit.verify(session, harness.tenant_id, anchor)
        await session.rollback()
    assert without.ok  # the head alone cannot tell: that is what the checkpoint is for
    assert (truncated.ok, truncated.seq) == (False, checkpoint.seq)
    assert truncated.problem == (
        f"truncated: the checkpoint holds entry {checkpoint.seq} but the log ends at {older['seq']}"
    )


async def test_a_checkpoint_written_without_the_key_is_refused(harness: Harness) -> None:
    await seed(harness)
    async with harness.database.transaction(write=False) as session:
        _result, real = await audit.checkpoint(session, harness.tenant_id)
        forged = audit.Checkpoint(real.tenant_id, real.seq, real.hash, "f" * 64)
        refused = await audit.verify(session, harness.tenant_id, forged)
    assert not refused.ok
    assert refused.problem is not None
    assert refused.problem.startswith("checkpoint: its MAC does not match")


async def test_an_entry_forged_without_the_key_is_named(harness: Harness) -> None:
    """Rewrite the newest entry and its hash as the unkeyed chain did (which `verify`
    accepted before), and move the head along with it."""
    await seed(harness)
    async with harness.database.transaction() as session:
        await unguarded(session, harness.backend)
        row = (
            await session.execute(
                text("SELECT * FROM event_log WHERE tenant_id = :t AND seq = 13"),
                {"t": harness.tenant_id},
            )
        ).one()
        data = json.loads(row.data) if isinstance(row.data, str) else dict(row.data)
        data["value"] = 1000
        fields = hashed_fields(
            tenant_id=row.tenant_id,
            type=row.type,
            customer_id=row.customer_id,
            data=data,
            actor_kind=row.actor_kind,
            actor_id=row.actor_id,
            actor_scope=row.actor_scope,
            correlation_id=row.correlation_id,
            occurred_at=harness.clock.now(),
        )
        forged = entry_hash(row.prev_hash, fields, None)
        await session.execute(
            text("UPDATE event_log SET data = :d, hash = :h WHERE id = :id"),
            {"d": json.dumps(data), "h": forged, "id": row.id},
        )
        await session.execute(
            text("UPDATE event_chain_heads SET hash = :h WHERE tenant_id = :t"),
            {"t": harness.tenant_id, "h": forged},
        )
        broken = await audit.verify(session, harness.tenant_id)
        await session.rollback()
    assert (broken.ok, broken.seq) == (False, 13)
    assert broken.problem is not None
    assert broken.problem.startswith("edited"), broken.problem


async def test_nothing_is_appended_to_a_head_moved_without_the_key(harness: Harness) -> None:
    await seed(harness)
    async with harness.database.transaction() as session:
        await unguarded(session, harness.backend)
        await session.execute(
            text("UPDATE event_chain_heads SET mac = :m WHERE tenant_id = :t"),
            {"t": harness.tenant_id, "m": "0" * 64},
        )
        ctx = Context(harness.tenant_id, Actor("system", "test", None), "c", harness.clock.now())
        with pytest.raises(eventlog.ChainHeadTampered):
            await eventlog.record(session, ctx, "CustomerUpdated", {"x": 1})
        await session.rollback()


async def test_entries_from_before_the_keyed_chain_verify_once_sealed(harness: Harness) -> None:
    """A tenant whose entries were written by the unkeyed release: they verify as they
    are, its head is sealed by `billfold audit seal`, and what follows is keyed."""
    now = harness.clock.now()
    tenant_id = "ten_legacy" + harness.tenant_id[-12:]
    async with harness.database.transaction() as session:
        await session.execute(
            text("INSERT INTO tenants (id, slug, name, created_at) VALUES (:t, :t, 'L', :n)"),
            {"t": tenant_id, "n": now},
        )
        await session.execute(
            text("INSERT INTO event_chain_heads (tenant_id, seq, hash) VALUES (:t, 0, :h)"),
            {"t": tenant_id, "h": GENESIS_HASH},
        )
        prev = GENESIS_HASH
        for seq in (1, 2):
            fields = hashed_fields(
                tenant_id=tenant_id,
                type="CustomerUpdated",
                customer_id=None,
                data={"n": seq},
                actor_kind="operator",
                actor_id="cli:old",
                actor_scope="admin",
                correlation_id="old",
                occurred_at=now,
            )
            digest = entry_hash(prev, fields, None)  # as the unkeyed release wrote them
            await session.execute(
                text(
                    "INSERT INTO event_log (tenant_id, seq, type, customer_id, data, "
                    "actor_kind, actor_id, actor_scope, correlation_id, occurred_at, "
                    "prev_hash, hash) VALUES (:t, :s, 'CustomerUpdated', NULL, :d, "
                    "'operator', 'cli:old', 'admin', 'old', :n, :p, :h)"
                ),
                {
                    "t": tenant_id,
                    "s": seq,
                    "d": json.dumps({"n": seq}),
                    "n": now,
                    "p": prev,
                    "h": digest,
                },
            )
            await session.execute(
                text("UPDATE event_chain_heads SET seq = :s, hash = :h WHERE tenant_id = :t"),
                {"t": tenant_id, "s": seq, "h": digest},
            )
            prev = digest

    async with harness.database.transaction() as session:
        unsealed = await audit.verify(session, tenant_id)
        assert (unsealed.ok, unsealed.entries) == (False, 2)
        assert unsealed.problem is not None
        assert unsealed.problem.startswith("unsealed")
        assert (await audit.seal(session, tenant_id)).ok
    async with harness.database.transaction() as session:
        ctx = Context(tenant_id, Actor("system", "test", None), "c", now)
        assert await eventlog.record(session, ctx, "CustomerUpdated", {"n": 3}) == 3
    async with harness.database.transaction() as session:
        head = await head_row(session, tenant_id)
        assert (head["seq"], head["keyed_from"]) == (3, 3)
        assert (await audit.verify(session, tenant_id)).ok
        assert (await audit.seal(session, tenant_id)).ok  # sealed already: left as it is
        assert await head_row(session, tenant_id) == head
