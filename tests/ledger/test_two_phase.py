"""Two-phase transfers: a pending transfer reserves, then is posted (for its amount or
less), voided or expired, once; a reservation counts against the balance rules."""

from __future__ import annotations

from datetime import timedelta

import pytest

from billfold.ledger import service as ledger
from billfold.ledger.records import (
    Account,
    AccountNotFound,
    ExceedsCredits,
    InvalidTransfer,
    NewTransfer,
    PendingTransferAlreadyResolved,
    PendingTransferExpired,
    PendingTransferNotFound,
    PostExceedsPending,
    TransferExistsWithDifferentFields,
)
from billfold.ledger.verify import verify
from tests.conftest import Harness
from tests.ledger.helpers import account, apply, apply_many, balances, move

pytestmark = pytest.mark.anyio


async def funded(harness: Harness, amount: int = 1000) -> tuple[str, str, str]:
    """A wallet (debits must not exceed credits) holding `amount`, the world it came
    from, and a usage account to spend on: their ids."""
    world = await account(harness, "world", type="equity")
    wallet = await account(
        harness, "wallet", type="liability", rule="debits_must_not_exceed_credits"
    )
    usage = await account(harness, "usage", type="revenue")
    await move(harness, "top-up", world.id, wallet.id, amount)
    return world.id, wallet.id, usage.id


async def test_a_post_for_less_releases_the_rest(harness: Harness) -> None:
    _world, wallet, usage = await funded(harness)
    hold = await move(harness, "hold", wallet, usage, 700, pending=True, timeout_s=60)
    assert (hold.kind, hold.expires_at) == ("pending", harness.clock.now() + timedelta(seconds=60))
    wallet_account = await ledger_account(harness, wallet)
    assert await balances(harness, wallet_account) == (0, 1000, 700, 0)
    posted = await apply(harness, NewTransfer("settle", post_pending_id="hold", amount=450))
    assert (posted.kind, posted.amount, posted.pending_id) == ("post", 450, "hold")
    assert (posted.debit_account_id, posted.credit_account_id) == (wallet, usage)
    assert await balances(harness, wallet_account) == (450, 1000, 0, 0)
    usage_account = await ledger_account(harness, usage)
    assert await balances(harness, usage_account) == (0, 450, 0, 0)
    # A replay of the post is the post; a second resolution is refused.
    assert await apply(harness, NewTransfer("settle", post_pending_id="hold", amount=450)) == posted
    with pytest.raises(PendingTransferAlreadyResolved) as refused:
        await apply(harness, NewTransfer("void-late", void_pending_id="hold"))
    assert (refused.value.status, refused.value.code) == (409, "pending_transfer_already_resolved")
    with pytest.raises(TransferExistsWithDifferentFields):
        await apply(harness, NewTransfer("settle", post_pending_id="hold", amount=451))


async def test_a_post_defaults_to_the_whole_pending_amount(harness: Harness) -> None:
    _world, wallet, usage = await funded(harness)
    await move(harness, "hold", wallet, usage, 300, pending=True)
    posted = await apply(harness, NewTransfer("settle", post_pending_id="hold"))
    assert posted.amount == 300
    assert await balances(harness, await ledger_account(harness, wallet)) == (300, 1000, 0, 0)


async def test_a_void_releases_the_reservation(harness: Harness) -> None:
    _world, wallet, usage = await funded(harness)
    await move(harness, "hold", wallet, usage, 1000, pending=True)
    voided = await apply(harness, NewTransfer("release", void_pending_id="hold"))
    assert (voided.kind, voided.amount) == ("void", 1000)
    assert await balances(harness, await ledger_account(harness, wallet)) == (0, 1000, 0, 0)
    assert await balances(harness, await ledger_account(harness, usage)) == (0, 0, 0, 0)


async def test_a_reservation_counts_against_the_rule(harness: Harness) -> None:
    _world, wallet, usage = await funded(harness)
    await move(harness, "hold", wallet, usage, 800, pending=True)
    with pytest.raises(ExceedsCredits):
        await move(harness, "spend", wallet, usage, 201)
    with pytest.raises(ExceedsCredits):
        await move(harness, "hold-2", wallet, usage, 201, pending=True)
    await move(harness, "spend", wallet, usage, 200)
    await apply(harness, NewTransfer("release", void_pending_id="hold"))
    await move(harness, "spend-2", wallet, usage, 800)


async def test_resolutions_are_refused_with_their_codes(harness: Harness) -> None:
    world, wallet, usage = await funded(harness)
    await move(harness, "hold", wallet, usage, 100, pending=True)
    await move(harness, "plain", world, wallet, 1)
    cases = [
        (NewTransfer("p1", post_pending_id="nope"), PendingTransferNotFound, 404),
        (NewTransfer("p2", post_pending_id="plain"), PendingTransferNotFound, 404),
        (NewTransfer("p3", post_pending_id="hold", amount=101), PostExceedsPending, 409),
        (NewTransfer("p4", void_pending_id="hold", amount=50), InvalidTransfer, 422),
        (NewTransfer("p5", world, None, None, post_pending_id="hold"), InvalidTransfer, 422),
        (
            NewTransfer("p6", post_pending_id="hold", void_pending_id="hold"),
            InvalidTransfer,
            422,
        ),
    ]
    for request, kind, status in cases:
        with pytest.raises(kind) as refused:
            await apply(harness, request)
        assert refused.value.status == status, request
    assert PendingTransferNotFound.code == "pending_transfer_not_found"
    assert PostExceedsPending.code == "post_exceeds_pending"


async def test_a_pending_transfer_expires_at_its_timeout(harness: Harness) -> None:
    _world, wallet, usage = await funded(harness)
    await move(harness, "short", wallet, usage, 100, pending=True, timeout_s=60)
    await move(harness, "long", wallet, usage, 200, pending=True, timeout_s=3600)
    await move(harness, "forever", wallet, usage, 300, pending=True)
    harness.clock.advance(timedelta(seconds=59))
    async with harness.database.transaction() as session:
        assert await ledger.expire(session, harness.operator()) == []
    harness.clock.advance(timedelta(seconds=1))
    with pytest.raises(PendingTransferExpired) as refused:
        await apply(harness, NewTransfer("late", post_pending_id="short"))
    assert (refused.value.status, refused.value.code) == (409, "pending_transfer_expired")
    async with harness.database.transaction() as session:
        assert await ledger.expire(session, harness.operator()) == ["short"]
    async with harness.database.transaction() as session:
        assert await ledger.expire(session, harness.operator()) == []
    assert await balances(harness, await ledger_account(harness, wallet)) == (0, 1000, 500, 0)
    with pytest.raises(PendingTransferAlreadyResolved):
        await apply(harness, NewTransfer("late-void", void_pending_id="short"))
    harness.clock.advance(timedelta(days=1))
    async with harness.database.transaction() as session:
        assert await ledger.expire(session, harness.operator()) == ["long"]
    async with harness.database.transaction(write=False) as session:
        result = await verify(session, harness.tenant_id)
    assert result.ok, result.describe()


async def test_a_batch_can_reserve_and_settle_together(harness: Harness) -> None:
    _world, wallet, usage = await funded(harness)
    made = await apply_many(
        harness,
        [
            NewTransfer("h", wallet, usage, 600, pending=True),
            NewTransfer("h-post", post_pending_id="h", amount=100),
            NewTransfer("h2", wallet, usage, 900, pending=True),  # 100 + 900 of 1000
        ],
    )
    assert [m.kind for m in made] == ["pending", "post", "pending"]
    assert await balances(harness, await ledger_account(harness, wallet)) == (100, 1000, 900, 0)
    with pytest.raises(PendingTransferAlreadyResolved) as refused:
        await apply_many(
            harness,
            [
                NewTransfer("h2-void", void_pending_id="h2"),
                NewTransfer("h3", wallet, usage, 1, pending=True),
                NewTransfer("h3-post", post_pending_id="h3"),
                NewTransfer("h3-void", void_pending_id="h3"),
            ],
        )
    assert refused.value.extra["index"] == 3
    assert await balances(harness, await ledger_account(harness, wallet)) == (100, 1000, 900, 0)


async def ledger_account(harness: Harness, account_id: str) -> Account:
    async with harness.database.transaction(write=False) as session:
        try:
            return await ledger.account(session, harness.operator(), account_id)
        except AccountNotFound:
            raise AssertionError(account_id) from None
