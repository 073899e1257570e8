"""Many workers move money between a few accounts with balance rules at once: random
transfers, linked batches and two-phase transfers, retried with the same ids (and with
the same ids and other fields). Afterwards every balance agrees with the transfers, no
rule was ever broken, and each id had exactly one effect."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from sqlalchemy import text

from billfold.kit.errors import BillfoldError
from billfold.ledger import service as ledger
from billfold.ledger.records import (
    NewTransfer,
    Transfer,
    TransferExistsWithDifferentFields,
)
from billfold.ledger.verify import verify
from tests.conftest import Harness, postgresql_only
from tests.ledger.helpers import account

pytestmark = pytest.mark.anyio

WORKERS = 8
ROUNDS = 40
ACCOUNTS = 10
SEED = 11


# Only PostgreSQL runs writers at once (SQLite queues them on one database lock), so only
# there can row locks, their order and the races between retried ids be tested.
@postgresql_only
async def test_random_concurrent_transfers_keep_every_invariant(harness: Harness) -> None:
    source = await account(harness, "source", type="equity")
    wallets = [
        await account(
            harness,
            f"wallet-{n}",
            type="liability",
            rule="debits_must_not_exceed_credits" if n % 2 == 0 else None,
        )
        for n in range(ACCOUNTS - 2)
    ]
    capped = await account(harness, "capped", rule="credits_must_not_exceed_debits")
    ids = [source.id, capped.id, *(w.id for w in wallets)]
    done: dict[str, Transfer] = {}  # every transfer some worker saw succeed, by id
    refused: Counter[str] = Counter()

    async def one(requests: list[NewTransfer]) -> list[Transfer] | None:
        try:
            async with harness.database.transaction() as session:
                made = await ledger.transfer_many(session, harness.operator(), requests)
        except BillfoldError as error:
            refused[error.code] += 1
            return None
        for each in made:
            assert done.setdefault(each.id, each) == each, "one id, one effect"
        return made

    async def worker(number: int) -> None:
        rng = random.Random(SEED * 100 + number)
        sent: list[NewTransfer] = []
        pendings: list[str] = []
        # All workers start at once on the same ids, each between one of two pairs of
        # accounts that share none (so no lock orders them): the first of each id wins,
        # the same fields replay it, other fields are 409s.
        for shared in range(6):
            debit, credit = rng.choice([(source.id, ids[3]), (capped.id, ids[5])])
            await one([NewTransfer(f"seed-{shared}", debit, credit, 5000)])
        for round_ in range(ROUNDS):
            name = f"w{number}-r{round_}"
            choice = rng.random()

            def pick() -> tuple[str, str]:
                debit, credit = rng.sample(ids, 2)
                return debit, credit

            if choice < 0.35:
                debit, credit = pick()
                requests = [NewTransfer(name, debit, credit, rng.randint(1, 300))]
            elif choice < 0.55:
                requests = []
                for leg in range(rng.randint(2, 4)):
                    debit, credit = pick()
                    requests.append(
                        NewTransfer(f"{name}-{leg}", debit, credit, rng.randint(1, 200))
                    )
            elif choice < 0.75:
                debit, credit = pick()
                requests = [NewTransfer(name, debit, credit, rng.randint(1, 300), pending=True)]
                pendings.append(name)
            elif choice < 0.9 and pendings:
                target = pendings.pop(rng.randrange(len(pendings)))
                if rng.random() < 0.5:
                    requests = [NewTransfer(f"{name}-post", post_pending_id=target, amount=1)]
                else:
                    requests = [NewTransfer(f"{name}-void", void_pending_id=target)]
            else:
                # A top-up under an id every worker uses at about the same time, to one of
                # two wallets: the first wins, the same fields replay it, others are 409.
                shared = f"top-up-{round_ // 4}"
                requests = [NewTransfer(shared, source.id, rng.choice(ids[2:4]), 500)]
            made = await one(requests)
            if made is not None:
                sent.extend(requests)
            if sent and rng.random() < 0.3:
                # A retry: the same request again, or the same id with other fields.
                again = rng.choice(sent)
                if rng.random() < 0.3 and again.amount is not None and again.pending is False:
                    changed = NewTransfer(
                        again.id,
                        again.debit_account_id,
                        again.credit_account_id,
                        again.amount + 1,
                        post_pending_id=again.post_pending_id,
                    )
                    with pytest.raises(TransferExistsWithDifferentFields):
                        async with harness.database.transaction() as session:
                            await ledger.transfer(session, harness.operator(), changed)
                    refused["retried_with_other_fields"] += 1
                else:
                    replay = await one([again])
                    assert replay is not None
                    assert replay[0] == done[again.id]

    async def watch(stop: asyncio.Event) -> None:
        """While the workers run, no committed balance breaks its rule."""
        while not stop.is_set():
            async with harness.database.transaction(write=False) as session:
                result = await verify(session, harness.tenant_id)
            assert not [v for v in result.violations if v.kind == "rule_broken"], result.describe()
            await asyncio.sleep(0.05)

    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(stop))
    await asyncio.gather(*(worker(n) for n in range(WORKERS)))
    stop.set()
    await watcher

    async with harness.database.transaction(write=False) as session:
        result = await verify(session, harness.tenant_id)
        stored = (
            await session.execute(
                text("SELECT id FROM ledger_transfers WHERE tenant_id = :t"),
                {"t": harness.tenant_id},
            )
        ).scalars()
        stored_ids = sorted(stored)
    assert result.ok, result.describe()
    # Each id the workers saw succeed is stored exactly once, and nothing else is.
    assert stored_ids == sorted(done)
    assert len(done) > WORKERS * ROUNDS // 2
    assert refused["exceeds_credits"] + refused["exceeds_debits"] > 0, refused
    assert refused["retried_with_other_fields"] > 0
    assert refused["transfer_exists_with_different_fields"] > 0, refused
