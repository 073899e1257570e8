"""The group commit (`TransferBatcher`): requests that arrive together are applied in one
transaction, each answered on its own; a refusal refuses only its request, a linked
batch stays all or nothing, replays answer what is stored, and a group whose transaction
fails as a whole is applied again request by request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from billfold.kit.context import Actor, Context
from billfold.kit.errors import BillfoldError
from billfold.ledger import service
from billfold.ledger.batcher import TransferBatcher
from billfold.ledger.records import (
    AccountNotFound,
    AmountNotPositive,
    ExceedsCredits,
    LedgerUnitsDiffer,
    NewTransfer,
    Transfer,
    TransferExistsWithDifferentFields,
)
from billfold.ledger.verify import verify
from tests.conftest import Harness, postgresql_only
from tests.ledger.helpers import account, balances, move

pytestmark = pytest.mark.anyio

OPERATOR = Actor(kind="operator", id="test", scope="admin")
RULE: Any = "debits_must_not_exceed_credits"


def batcher_of(
    harness: Harness, sizes: list[int], alone: list[int], in_flight: int | None = None
) -> TransferBatcher:
    return TransferBatcher(
        harness.database, in_flight=in_flight, on_group=sizes.append, on_alone=alone.append
    )


async def stored_ids(harness: Harness) -> list[str]:
    async with harness.database.transaction(write=False) as session:
        rows = await session.execute(
            text("SELECT id FROM ledger_transfers WHERE tenant_id = :t ORDER BY id"),
            {"t": harness.tenant_id},
        )
        return list(rows.scalars())


async def test_each_request_of_a_group_keeps_its_own_answer(harness: Harness) -> None:
    equity = await account(harness, "equity", type="equity")
    wallet = await account(harness, "wallet", type="liability", rule=RULE)
    dest = await account(harness, "dest", type="liability")
    euros = await account(harness, "euros", unit="EUR")
    await move(harness, "fund", equity.id, wallet.id, 100)
    sizes: list[int] = []
    alone: list[int] = []
    batcher = batcher_of(harness, sizes, alone, in_flight=1)  # all ten in one group
    ctx = harness.operator()

    def plain(id: str, amount: int, debit: str = wallet.id, credit: str = dest.id) -> Any:
        return batcher.transfer_many(ctx, [NewTransfer(id, debit, credit, amount)])

    answers = await asyncio.gather(
        plain("a", 60),  # 100 -> 40
        plain("b", 60),  # exceeds: 40 left
        batcher.transfer_many(  # linked: the second leg exceeds, so neither is applied
            ctx,
            [NewTransfer("c1", wallet.id, dest.id, 30), NewTransfer("c2", wallet.id, dest.id, 30)],
        ),
        plain("d", 40),  # 40 -> 0: the linked batch left nothing behind
        plain("fund", 100, equity.id, wallet.id),  # a replay of what was stored before
        plain("fund", 99, equity.id, wallet.id),  # the same id, other fields
        plain("e", 1, "lac_nope"),  # an unknown account
        plain("f", 1, euros.id, dest.id),  # units differ
        plain("a", 60),  # the same id as a request earlier in the group: one effect
        batcher.transfer_many(  # a reservation and its post, in one linked batch
            ctx,
            [
                NewTransfer("g", equity.id, dest.id, 5, pending=True),
                NewTransfer("g-post", post_pending_id="g", amount=3),
            ],
        ),
        return_exceptions=True,
    )
    assert sizes == [10], "one group, one transaction"
    assert alone == []
    a, b, c, d, replay, other, unknown, units, again, two_phase = answers
    assert isinstance(a, list)
    assert a[0].amount == 60
    assert isinstance(b, ExceedsCredits)
    assert isinstance(c, ExceedsCredits)
    assert c.extra["transfer_id"] == "c2"
    assert isinstance(d, list)
    assert d[0].amount == 40
    assert isinstance(replay, list)
    assert replay[0].id == "fund"
    assert isinstance(other, TransferExistsWithDifferentFields)
    assert isinstance(unknown, AccountNotFound)
    assert isinstance(units, LedgerUnitsDiffer)
    assert again == a
    assert isinstance(two_phase, list)
    assert [t.kind for t in two_phase] == ["pending", "post"]
    assert await balances(harness, wallet) == (100, 100, 0, 0)
    assert await balances(harness, dest) == (0, 103, 0, 0)
    assert await stored_ids(harness) == ["a", "d", "fund", "g", "g-post"]
    async with harness.database.transaction(write=False) as session:
        assert (await verify(session, harness.tenant_id)).ok
    await batcher.close()


async def test_a_malformed_request_is_refused_before_it_queues(harness: Harness) -> None:
    cash = await account(harness, "cash")
    revenue = await account(harness, "revenue", type="revenue")
    sizes: list[int] = []
    batcher = batcher_of(harness, sizes, [])
    with pytest.raises(AmountNotPositive):
        await batcher.transfer(harness.operator(), NewTransfer("t", cash.id, revenue.id, 0))
    assert sizes == []
    made = await batcher.transfer(harness.operator(), NewTransfer("t", cash.id, revenue.id, 5))
    assert (made.id, made.amount, sizes) == ("t", 5, [1])


@postgresql_only
async def test_a_group_that_fails_as_a_whole_is_applied_request_by_request(
    harness: Harness,
) -> None:
    """PostgreSQL refuses a NUL in JSON: the group's insert fails, so each request is
    applied alone; only the one that holds it fails."""
    cash = await account(harness, "cash")
    revenue = await account(harness, "revenue", type="revenue")
    sizes: list[int] = []
    alone: list[int] = []
    batcher = batcher_of(harness, sizes, alone, in_flight=1)
    ctx = harness.operator()
    answers = await asyncio.gather(
        batcher.transfer(ctx, NewTransfer("ok-1", cash.id, revenue.id, 5)),
        batcher.transfer(ctx, NewTransfer("bad", cash.id, revenue.id, 5, metadata={"x": "\x00"})),
        batcher.transfer(ctx, NewTransfer("ok-2", cash.id, revenue.id, 7)),
        return_exceptions=True,
    )
    assert (sizes, alone) == ([3], [3])
    assert isinstance(answers[0], Transfer)
    assert isinstance(answers[2], Transfer)
    assert isinstance(answers[1], DBAPIError)
    assert await stored_ids(harness) == ["ok-1", "ok-2"]
    assert await balances(harness, cash) == (12, 0, 0, 0)


@postgresql_only
async def test_many_clients_through_the_group_commit_keep_every_invariant(
    harness: Harness,
) -> None:
    """48 clients at once, most through one batcher and some straight through
    `transfer_many` in transactions of their own (as other domains call it): transfers
    that overdraw, linked batches, replays, and ids that several clients send at once
    with the same or other fields. Afterwards every balance agrees with the transfers,
    no rule was broken, and each id had one effect."""
    source = await account(harness, "source", type="equity")
    wallets = [await account(harness, f"w{n}", type="liability", rule=RULE) for n in range(6)]
    sink = await account(harness, "sink", type="liability")
    for wallet in wallets:
        await move(harness, f"fund-{wallet.code}", source.id, wallet.id, 1_000)
    sizes: list[int] = []
    alone: list[int] = []
    # Two groups in flight on PostgreSQL: they overlap and wait on each other's locks.
    batcher = batcher_of(harness, sizes, alone, in_flight=2)
    seen: dict[str, Transfer] = {}
    refused: dict[str, int] = {}

    async def send(ctx: Context, requests: list[NewTransfer], direct: bool) -> None:
        try:
            if direct:
                async with harness.database.transaction() as session:
                    made = await service.transfer_many(session, ctx, requests)
            else:
                made = await batcher.transfer_many(ctx, requests)
        except BillfoldError as error:
            refused[error.code] = refused.get(error.code, 0) + 1
            return
        for each in made:
            assert seen.setdefault(each.id, each) == each, "one id, one effect"

    async def client(number: int) -> None:
        direct = number % 6 == 0
        sent: list[list[NewTransfer]] = []
        ctx = Context(
            harness.tenant_id, harness.operator().actor, f"c{number}", harness.clock.now()
        )
        for round_ in range(12):
            wallet = wallets[(number + round_) % len(wallets)]
            other = wallets[(number + 2 * round_ + 1) % len(wallets)]
            shape = (number + round_) % 5
            if shape == 0:  # overdraws, sooner or later
                requests = [NewTransfer(f"c{number}-{round_}", wallet.id, sink.id, 150)]
            elif shape == 1:  # linked: between wallets, then out
                requests = [
                    NewTransfer(f"c{number}-{round_}-a", wallet.id, other.id, 40),
                    NewTransfer(f"c{number}-{round_}-b", other.id, sink.id, 60),
                ]
            elif shape == 2:  # an id every client sends in this round, same fields
                requests = [NewTransfer(f"shared-{round_}", source.id, wallets[0].id, 10)]
            elif shape == 3:  # an id every client sends, each with its own amount
                requests = [NewTransfer(f"clash-{round_}", source.id, sink.id, 1 + number)]
            elif sent:  # a retry: what this client sent last, again
                requests = sent[-1]
            else:
                requests = [NewTransfer(f"c{number}-{round_}", source.id, wallet.id, 20)]
            await send(ctx, requests, direct)
            sent.append(requests)

    await asyncio.gather(*(client(n) for n in range(48)))
    await batcher.close()

    async with harness.database.transaction(write=False) as session:
        result = await verify(session, harness.tenant_id)
    assert result.ok, result.describe()
    stored = set(await stored_ids(harness))
    funding = {f"fund-{wallet.code}" for wallet in wallets}
    assert stored == set(seen) | funding
    for wallet in wallets:
        debits, credits, *_ = await balances(harness, wallet)
        assert debits <= credits
    assert refused.get("exceeds_credits", 0) > 0, refused
    assert refused.get("transfer_exists_with_different_fields", 0) > 0, refused
    assert sum(1 for id in seen if id.startswith("shared-")) > 0
    assert max(sizes) > 1, "requests were grouped"
    assert sum(sizes) > 0
