"""Where an invoice stands on the ledger (decision 0046): which book it posts to, and
whether its write-off is posted, read under the invoice's lock by at most one statement.

A test-clock customer's invoices post to the test book, except those posted to the live
book before test books existed: an invoice keeps the book its finalization went to, so
its receivable still nets. An uncollectible invoice's write-off is posted when it is
marked; one marked before write-offs posted has none until it is touched again.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.invoicing import postings, repository
from billfold.invoicing.document import InvoiceStatus
from billfold.kit.db import Record
from billfold.kit.invariants import invariant


@dataclass(frozen=True)
class Standing:
    book: postings.Book
    written_off: bool  # its write-off is on the ledger


async def standing(session: AsyncSession, tenant_id: str, row: Record) -> Standing:
    """The book the invoice `row` posts to, and whether its write-off is posted. A live
    customer's open or paid invoice needs no read."""
    test = row.customer_test_clock_id is not None
    finalization = [f"{row.id}:revenue", f"{row.id}:tax"]
    write_off = postings.write_off_id(row.id)
    wanted = [*finalization] if test and row.posted_at is not None else []
    if row.status == InvoiceStatus.UNCOLLECTIBLE:
        wanted.append(write_off)
    found = await repository.posted_accounts(session, tenant_id, wanted) if wanted else {}
    posted = [codes for transfer_id, codes in found.items() if transfer_id in finalization]
    if posted and not any(code.startswith(postings.TEST_BOOK) for code in posted[0]):
        test = False  # posted to the live book before test books existed
    return Standing(postings.Book(row.customer_id, row.currency, test), write_off in found)


def recovery(
    row: Record, stand: Standing, event_id: str, amount_minor: int, due_minor: int
) -> list[postings.Leg]:
    """What an event that takes `amount_minor` off what is due of the invoice `row`
    (`due_minor` before it) posts first while the invoice is uncollectible: its write-off
    if it was marked before write-offs posted (for what is due now, as it would have
    been), then `amount_minor` back from bad debt to the receivable. Nothing for an
    invoice that is not uncollectible."""
    if row.status != InvoiceStatus.UNCOLLECTIBLE:
        return []
    invariant(0 < amount_minor <= due_minor, "an event takes back at most what is written off")
    legs = [] if stand.written_off else postings.written_off(row.id, stand.book, due_minor)
    return legs + postings.recovered(event_id, row.id, stand.book, amount_minor)
