"""Accounts and plain transfers: double entry, idempotent ids, linked batches, balance
rules, append-only transfers, and each refusal's stable code."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from billfold.kit.errors import BillfoldError
from billfold.ledger.records import (
    AccountExistsWithDifferentFields,
    AccountNotFound,
    AmountNotPositive,
    ExceedsCredits,
    ExceedsDebits,
    InvalidAccount,
    InvalidTransfer,
    LedgerUnitsDiffer,
    NewTransfer,
    TransferExistsWithDifferentFields,
)
from billfold.ledger.verify import verify
from tests.conftest import Harness
from tests.ledger.helpers import account, apply, apply_many, balances, move

pytestmark = pytest.mark.anyio


async def test_a_transfer_debits_one_account_and_credits_the_other(harness: Harness) -> None:
    cash = await account(harness, "cash")
    revenue = await account(harness, "revenue", type="revenue")
    made = await move(harness, "t1", cash.id, revenue.id, 2900, code="sale", metadata={"n": 1})
    assert (made.kind, made.amount, made.unit, made.created_at) == (
        "posted",
        2900,
        "USD",
        harness.clock.now(),
    )
    assert await balances(harness, cash) == (2900, 0, 0, 0)
    assert await balances(harness, revenue) == (0, 2900, 0, 0)


async def test_an_account_is_created_once_per_code(harness: Harness) -> None:
    first = await account(harness, "wallet:ada", unit="credits", type="liability")
    again = await account(harness, "wallet:ada", unit="credits", type="liability")
    assert again.id == first.id
    with pytest.raises(AccountExistsWithDifferentFields) as refused:
        await account(
            harness,
            "wallet:ada",
            unit="credits",
            type="liability",
            rule=("debits_must_not_exceed_credits"),
        )
    assert (refused.value.status, refused.value.code) == (
        409,
        "account_exists_with_different_fields",
    )


@pytest.mark.parametrize(
    ("code", "unit", "type", "rule", "error_code"),
    [
        ("bad code!", "USD", "asset", None, "invalid_account"),
        ("ok", "USD", "cash", None, "invalid_account"),
        ("ok", "XYZ", "asset", None, "unknown_currency"),
        ("ok", "Credits", "asset", None, "invalid_account"),
        ("ok", "USD", "asset", "never_negative", "invalid_account"),
    ],
)
async def test_an_account_needs_a_known_type_unit_and_rule(
    harness: Harness, code: str, unit: str, type: str, rule: str | None, error_code: str
) -> None:
    with pytest.raises(BillfoldError) as refused:
        await account(harness, code, unit=unit, type=type, rule=rule)  # type: ignore[arg-type]
    assert (refused.value.status, refused.value.code) == (422, error_code)
    assert isinstance(refused.value, InvalidAccount) or error_code == "unknown_currency"


async def test_the_same_id_with_the_same_fields_has_one_effect(harness: Harness) -> None:
    cash = await account(harness, "cash")
    sales = await account(harness, "sales", type="revenue")
    first = await move(harness, "once", cash.id, sales.id, 500, code="sale")
    again = await move(harness, "once", cash.id, sales.id, 500, code="sale")
    assert again == first
    assert await balances(harness, cash) == (500, 0, 0, 0)


@pytest.mark.parametrize(
    "change",
    [{"amount": 501}, {"code": "other"}, {"metadata": {"a": 1}}, {"swap": True}],
)
async def test_the_same_id_with_other_fields_is_a_conflict(
    harness: Harness, change: dict[str, object]
) -> None:
    cash = await account(harness, "cash")
    sales = await account(harness, "sales", type="revenue")
    await move(harness, "once", cash.id, sales.id, 500, code="sale")
    swap = bool(change.get("swap"))
    debit, credit = (sales.id, cash.id) if swap else (cash.id, sales.id)
    fields = {"amount": 500, "code": "sale", **{k: v for k, v in change.items() if k != "swap"}}
    with pytest.raises(TransferExistsWithDifferentFields) as refused:
        await apply(harness, NewTransfer("once", debit, credit, **fields))  # type: ignore[arg-type]
    assert (refused.value.status, refused.value.code) == (
        409,
        "transfer_exists_with_different_fields",
    )
    assert await balances(harness, cash) == (500, 0, 0, 0)


async def test_ids_are_scoped_to_their_tenant(harness: Harness) -> None:
    from tests.conftest import new_harness

    other = await new_harness(harness.settings.database_url)
    try:
        for each in (harness, other):
            cash = await account(each, "cash")
            sales = await account(each, "sales", type="revenue")
            await move(each, "same-id", cash.id, sales.id, 100)
            assert await balances(each, cash) == (100, 0, 0, 0)
        # An account of another tenant is not found from this one.
        with pytest.raises(AccountNotFound):
            await move(harness, "cross", cash.id, sales.id, 1)
    finally:
        await other.client.aclose()
        await other.database.dispose()


async def test_bad_transfers_are_refused_with_their_codes(harness: Harness) -> None:
    usd = await account(harness, "usd")
    eur = await account(harness, "eur", unit="EUR")
    credits = await account(harness, "credits", unit="credits")
    usd2 = await account(harness, "usd2")
    cases: list[tuple[NewTransfer, type[BillfoldError], int, str]] = [
        (NewTransfer("u", usd.id, eur.id, 1), LedgerUnitsDiffer, 422, "ledger_units_differ"),
        (NewTransfer("c", credits.id, usd.id, 1), LedgerUnitsDiffer, 422, "ledger_units_differ"),
        (NewTransfer("z", usd.id, usd2.id, 0), AmountNotPositive, 422, "amount_not_positive"),
        (NewTransfer("n", usd.id, usd2.id, -5), AmountNotPositive, 422, "amount_not_positive"),
        (NewTransfer("x", usd.id, "lac_nope", 1), AccountNotFound, 404, "account_not_found"),
        (NewTransfer("same", usd.id, usd.id, 1), InvalidTransfer, 422, "invalid_transfer"),
        (NewTransfer("bad id!", usd.id, usd2.id, 1), InvalidTransfer, 422, "invalid_transfer"),
        (NewTransfer("e~x", usd.id, usd2.id, 1), InvalidTransfer, 422, "invalid_transfer"),
        (
            NewTransfer("t", usd.id, usd2.id, 1, timeout_s=5),
            InvalidTransfer,
            422,
            "invalid_transfer",
        ),
        (NewTransfer("m", usd.id, None, 1), InvalidTransfer, 422, "invalid_transfer"),
    ]
    for request, kind, status, code in cases:
        with pytest.raises(kind) as refused:
            await apply(harness, request)
        assert (refused.value.status, refused.value.code) == (status, code), request
    assert await balances(harness, usd) == (0, 0, 0, 0)


async def test_a_rule_refuses_a_transfer_that_would_break_it(harness: Harness) -> None:
    world = await account(harness, "world", type="equity")
    wallet = await account(
        harness, "wallet", type="liability", rule="debits_must_not_exceed_credits"
    )
    spend = await account(harness, "spend", type="expense")
    await move(harness, "top-up", world.id, wallet.id, 1000)
    await move(harness, "spend-1", wallet.id, spend.id, 600)
    with pytest.raises(ExceedsCredits) as refused:
        await move(harness, "spend-2", wallet.id, spend.id, 401)
    assert (refused.value.status, refused.value.code) == (409, "exceeds_credits")
    await move(harness, "spend-3", wallet.id, spend.id, 400)
    assert await balances(harness, wallet) == (1000, 1000, 0, 0)

    cap = await account(harness, "cap", type="asset", rule="credits_must_not_exceed_debits")
    with pytest.raises(ExceedsDebits) as refused_credit:
        await move(harness, "over", world.id, cap.id, 1)
    assert refused_credit.value.code == "exceeds_debits"


async def test_a_linked_batch_is_all_or_nothing_and_names_the_failure(harness: Harness) -> None:
    world = await account(harness, "world", type="equity")
    wallet = await account(harness, "wallet", rule="debits_must_not_exceed_credits")
    fee = await account(harness, "fee", type="revenue")
    batch = [
        NewTransfer("b1", world.id, wallet.id, 100),
        NewTransfer("b2", wallet.id, fee.id, 60),
        NewTransfer("b3", wallet.id, fee.id, 41),  # 101 out of 100
    ]
    with pytest.raises(ExceedsCredits) as refused:
        await apply_many(harness, batch)
    assert refused.value.extra["index"] == 2
    assert refused.value.extra["transfer_id"] == "b3"
    assert "transfers[2] b3" in refused.value.detail
    assert await balances(harness, wallet) == (0, 0, 0, 0)
    async with harness.database.transaction(write=False) as session:
        assert (await verify(session, harness.tenant_id)).transfers == 0
    # The earlier transfers of a batch count for the later ones.
    made = await apply_many(harness, [*batch[:2], NewTransfer("b3", wallet.id, fee.id, 40)])
    assert [m.id for m in made] == ["b1", "b2", "b3"]
    assert await balances(harness, wallet) == (100, 100, 0, 0)
    # A replayed batch returns what is stored, with no second effect.
    assert await apply_many(harness, [*batch[:2], NewTransfer("b3", wallet.id, fee.id, 40)]) == made
    assert await balances(harness, wallet) == (100, 100, 0, 0)


async def test_a_batch_may_not_name_an_id_twice(harness: Harness) -> None:
    a = await account(harness, "a")
    b = await account(harness, "b")
    with pytest.raises(InvalidTransfer):
        await apply_many(
            harness, [NewTransfer("d", a.id, b.id, 1), NewTransfer("d", a.id, b.id, 1)]
        )


async def test_transfers_are_append_only(harness: Harness) -> None:
    a = await account(harness, "a")
    b = await account(harness, "b")
    await move(harness, "fixed", a.id, b.id, 10)
    for statement in (
        "UPDATE ledger_transfers SET amount = 11",
        "DELETE FROM ledger_transfers",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with harness.database.transaction() as session:
                await session.execute(text(statement))
    # A mistake is corrected by a reversing transfer.
    await move(harness, "fixed-reversal", b.id, a.id, 10, code="reversal")
    assert await balances(harness, a) == (10, 10, 0, 0)


async def test_verify_finds_nothing_wrong_and_names_a_corrupted_balance(
    harness: Harness,
) -> None:
    a = await account(harness, "a")
    b = await account(harness, "b", rule="credits_must_not_exceed_debits")
    await move(harness, "one", b.id, a.id, 25)
    await move(harness, "two", a.id, b.id, 10)
    async with harness.database.transaction(write=False) as session:
        result = await verify(session, harness.tenant_id)
    assert (result.ok, result.accounts, result.transfers) == (True, 2, 2)
    assert result.describe() == "ok: 2 accounts, 2 transfers"
    async with harness.database.transaction() as session:
        await session.execute(
            text("UPDATE ledger_accounts SET credits_posted = 7 WHERE id = :id"), {"id": a.id}
        )
    async with harness.database.transaction(write=False) as session:
        result = await verify(session, harness.tenant_id)
    kinds = {(v.kind, v.account_code, v.balance) for v in result.violations}
    assert ("balance_differs", "a", "credits_posted") in kinds
    differs = next(v for v in result.violations if v.kind == "balance_differs")
    assert (differs.account_id, differs.stored, differs.recomputed) == (a.id, 7, 25)
    assert ("unit_unbalanced", None, "posted") in kinds
    assert f"account {a.id} (a): credits_posted is 7" in result.describe()
