"""Invoices on the ledger (decisions 0043, 0046): what each economic event of an invoice
posts, by transfers whose ids are derived from the invoice's, its payment's or its credit
note's id, so a retry, a replay or a lazy second posting has one effect.

    finalized     receivable:{customer}:{CUR} -> revenue:{CUR}         net of the lines
                  receivable:{customer}:{CUR} -> tax_payable:{CUR}     tax
    paid          cash:{CUR}                  -> receivable:...        the payment
    credited      revenue:{CUR}, tax_payable  -> receivable:...        the credit note
                  receivable:...              -> refunds_payable:{CUR} what was paid, given back
    refund paid   refunds_payable:{CUR}       -> cash:{CUR}
    voided        revenue:{CUR}, tax_payable  -> receivable:...        what was left of it
    written off   bad_debt:{CUR}              -> receivable:...        what was due
    recovered     receivable:...              -> bad_debt:{CUR}        what a payment, credit
                                                                       note or void of an
                                                                       uncollectible invoice
                                                                       takes off what is due

(`a -> b` debits a and credits b.) An amount of zero posts nothing (the ledger moves
positive amounts only); a negative one (a net of the lines below zero) posts the other
way. The receivable of an invoice nets to what is due, less what is written off: zero
once it is paid, voided or credited in full, and zero while it is uncollectible (its due
is in bad debt, and each event that lowers what is due recovers as much from bad debt
first, so a later payment ends as cash and less bad debt).

A test-clock customer's invoices post to the test book: the same accounts with codes
prefixed `test:` (`test:revenue:USD`, `test:receivable:{customer}:USD`), so test money
never mixes with the live books (`Book`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.invoicing import repository
from billfold.kit.context import Context
from billfold.kit.invariants import invariant
from billfold.ledger import service as ledger
from billfold.ledger.records import MAX_BATCH, AccountType, NewTransfer

# code prefix -> the account's type (the shared chart of accounts, issue 11)
_TYPES: Final[Mapping[str, AccountType]] = {
    "receivable": "asset",
    "cash": "asset",
    "revenue": "revenue",
    "tax_payable": "liability",
    "refunds_payable": "liability",
    "bad_debt": "expense",
}
TEST_BOOK: Final = "test:"  # what a test book's codes begin with


@dataclass(frozen=True)
class Book:
    """The accounts one invoice posts to: its customer's receivable in its currency and
    the tenant's accounts in that currency, in the live book or, for a test-clock
    customer, the test book (the same codes prefixed `test:`, decision 0046)."""

    customer_id: str
    currency: str
    test: bool

    def account(self, kind: str) -> str:
        """`revenue` -> `revenue:USD` (`test:revenue:USD` in the test book)."""
        return f"{TEST_BOOK if self.test else ''}{kind}:{self.currency}"

    @property
    def receivable(self) -> str:
        return self.account(f"receivable:{self.customer_id}")


@dataclass(frozen=True)
class Leg:
    """One transfer to be, by account codes: `amount` minor units from `credit` to
    `debit` (debits `debit`, credits `credit`); negative posts the other way."""

    id: str
    debit: str
    credit: str
    amount: int
    code: str
    metadata: Mapping[str, Any]


class Chart:
    """The accounts one transaction posts to, by code: those that exist read by one
    statement for a whole batch (a batch of 500 invoices names up to 500 receivables),
    the others created through the ledger (idempotent by code)."""

    def __init__(self, session: AsyncSession, ctx: Context) -> None:
        self._session = session
        self._ctx = ctx
        self._ids: dict[str, str] = {}

    async def find(self, codes: Iterable[str]) -> None:
        wanted = sorted(set(codes) - self._ids.keys())
        if not wanted:
            return
        found = {
            row.code: row
            for row in await repository.chart_accounts(self._session, self._ctx.tenant_id, wanted)
        }
        for code in wanted:
            kind, _, rest = code.removeprefix(TEST_BOOK).partition(":")
            expected = (_TYPES[kind], rest.rsplit(":", 1)[-1], None)
            account = found.get(code)
            if account is None:
                made = await ledger.create_account(
                    self._session, self._ctx, code=code, type=expected[0], unit=expected[1]
                )
                self._ids[code] = made.id
                continue
            invariant(
                (account.type, account.unit, account.rule) == expected,
                "a chart account is what the chart says it is",
            )
            self._ids[code] = account.id

    async def transfers(self, legs: Sequence[Leg]) -> list[NewTransfer]:
        """The legs as the ledger's transfers: those of zero left out, negative ones
        turned around."""
        moving = [leg for leg in legs if leg.amount != 0]
        await self.find(code for leg in moving for code in (leg.debit, leg.credit))
        made = []
        for leg in moving:
            debit, credit = (leg.debit, leg.credit) if leg.amount > 0 else (leg.credit, leg.debit)
            made.append(
                NewTransfer(
                    leg.id,
                    self._ids[debit],
                    self._ids[credit],
                    abs(leg.amount),
                    code=leg.code,
                    metadata=dict(leg.metadata),
                )
            )
        return made


def moved(legs: Sequence[Leg]) -> list[str]:
    """The ids of the legs that move something: the transfers an event names."""
    return [leg.id for leg in legs if leg.amount != 0]


async def post(session: AsyncSession, ctx: Context, legs: Sequence[Leg]) -> list[str]:
    """Post one event's legs as one linked batch; the ids of the transfers."""
    chart = Chart(session, ctx)
    made = await chart.transfers(legs)
    await ledger.transfer_many(session, ctx, made)
    return [transfer.id for transfer in made]


async def post_many(session: AsyncSession, ctx: Context, events: Sequence[Sequence[Leg]]) -> None:
    """Post many events' legs (a batch of finalized invoices) by as few linked batches
    as the ledger's limit allows, an event's legs never split between two: all of
    them or none, with the caller's transaction."""
    chart = Chart(session, ctx)
    await chart.find(
        code for legs in events for leg in legs if leg.amount for code in (leg.debit, leg.credit)
    )
    batch: list[NewTransfer] = []
    for legs in events:
        made = await chart.transfers(legs)
        if len(batch) + len(made) > MAX_BATCH:
            await ledger.transfer_many(session, ctx, batch)
            batch = []
        batch += made
    await ledger.transfer_many(session, ctx, batch)


# What each event posts.


def finalized(invoice_id: str, book: Book, subtotal_minor: int, tax_minor: int) -> list[Leg]:
    """A finalized invoice: its total receivable, its net revenue, its tax payable."""
    owed = book.receivable
    meta = {"invoice_id": invoice_id}
    return [
        Leg(
            f"{invoice_id}:revenue", owed, book.account("revenue"), subtotal_minor, "invoice", meta
        ),
        Leg(f"{invoice_id}:tax", owed, book.account("tax_payable"), tax_minor, "invoice", meta),
    ]


def paid(payment_id: str, invoice_id: str, book: Book, amount_minor: int) -> list[Leg]:
    """A payment received outside Billfold (manual; a provider's later): cash in."""
    meta = {"invoice_id": invoice_id, "payment_id": payment_id}
    cash = book.account("cash")
    return [Leg(f"{payment_id}:cash", cash, book.receivable, amount_minor, "payment", meta)]


def credited(
    credit_note_id: str,
    invoice_id: str,
    book: Book,
    *,
    net_minor: int,
    tax_minor: int,
    refund_minor: int,
) -> list[Leg]:
    """A credit note: its revenue and tax reversed against the receivable; the part of it
    beyond what was due (paid money given back) moved on to refunds payable. Credit to
    the wallet is moved from the receivable by the wallet itself instead."""
    owed = book.receivable
    meta = {"invoice_id": invoice_id, "credit_note_id": credit_note_id}
    cn = credit_note_id
    return [
        Leg(f"{cn}:revenue", book.account("revenue"), owed, net_minor, "credit_note", meta),
        Leg(f"{cn}:tax", book.account("tax_payable"), owed, tax_minor, "credit_note", meta),
        Leg(f"{cn}:refund", owed, book.account("refunds_payable"), refund_minor, "refund", meta),
    ]


def refund_paid(credit_note_id: str, invoice_id: str, book: Book, amount_minor: int) -> Leg:
    """A refund paid out (by hand until the payment connector does it): cash out."""
    meta = {"invoice_id": invoice_id, "credit_note_id": credit_note_id}
    return Leg(
        f"{credit_note_id}:refund_paid",
        book.account("refunds_payable"),
        book.account("cash"),
        amount_minor,
        "refund_paid",
        meta,
    )


def voided(invoice_id: str, book: Book, net_minor: int, tax_minor: int) -> list[Leg]:
    """A voided invoice: what is left of its revenue and tax (after its credit notes)
    reversed against the receivable."""
    owed = book.receivable
    meta = {"invoice_id": invoice_id}
    return [
        Leg(f"{invoice_id}:void:revenue", book.account("revenue"), owed, net_minor, "void", meta),
        Leg(f"{invoice_id}:void:tax", book.account("tax_payable"), owed, tax_minor, "void", meta),
    ]


def write_off_id(invoice_id: str) -> str:
    """An invoice is written off once: by the transfer of this id."""
    return f"{invoice_id}:write_off"


def written_off(invoice_id: str, book: Book, due_minor: int) -> list[Leg]:
    """An invoice written off as uncollectible: what is due moves from the receivable to
    the bad-debt expense."""
    meta = {"invoice_id": invoice_id}
    return [
        Leg(
            write_off_id(invoice_id),
            book.account("bad_debt"),
            book.receivable,
            due_minor,
            "write_off",
            meta,
        )
    ]


def recovered(event_id: str, invoice_id: str, book: Book, amount_minor: int) -> list[Leg]:
    """What an event on a written-off invoice takes off what is due (a payment, a credit
    note, a void; `event_id` is its id) taken back from bad debt to the receivable first,
    so the event's own transfers meet the receivable as on an open invoice."""
    meta = {"invoice_id": invoice_id, "event_id": event_id}
    return [
        Leg(
            f"{event_id}:recovery",
            book.receivable,
            book.account("bad_debt"),
            amount_minor,
            "write_off_recovery",
            meta,
        )
    ]
