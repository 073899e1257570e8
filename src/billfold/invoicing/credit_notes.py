"""Credit notes: credit against a finalized invoice, in full or line by line, with a
reason. A credit note reduces what is due and never edits the invoice; like Stripe's, one
that brings what is due to zero settles the invoice (`paid`). What it credits beyond what
is due is money paid, given back as the admin chooses (`refund_to`): a refund (owed on
`refunds_payable` until it is marked paid, `refunds`) or credit to the customer's wallet.
Each posts to the ledger (`postings`, decision 0043); on an uncollectible invoice, what
it takes off what is due is taken back from bad debt first (decision 0046).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from billfold.customers import service as customers
from billfold.invoicing import books, postings, repository, wallet
from billfold.invoicing.document import InvoiceStatus
from billfold.invoicing.records import Line
from billfold.invoicing.service import (
    InvoiceStateConflict,
    due_of,
    get,
    locked,
    post_finalization,
)
from billfold.kit import eventlog
from billfold.kit.context import Context
from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.ids import new_id
from billfold.kit.money import round_minor


class CreditExceedsDue(InvalidInput):
    status = 409
    code = "credit_exceeds_amount_due"
    title = "A credit note larger than what is due"


RefundTo = Literal["refund", "wallet"]


class CreditExceedsLine(InvalidInput):
    code = "credit_exceeds_line"
    title = "A credit larger than what is left of the line"


@dataclass(frozen=True)
class CreditLine:
    position: int
    description: str
    amount_minor: int  # tax included
    tax_minor: int


@dataclass(frozen=True)
class CreditNote:
    id: str
    number: str
    invoice_id: str
    reason: str
    lines: tuple[CreditLine, ...]
    total_minor: int
    tax_minor: int
    created_at: datetime
    refund_minor: int = 0  # beyond what was due: paid money given back
    refund_to: RefundTo | None = None
    refund_paid_at: datetime | None = None
    refund_reference: str | None = None


async def issue(
    session: AsyncSession,
    ctx: Context,
    invoice_id: str,
    *,
    reason: str,
    lines: Sequence[tuple[int, int | None]] | None,
    refund_to: RefundTo | None = None,
) -> CreditNote:
    """Credit `lines` of the invoice ((position, amount in minor units, tax included; None
    for all that is left of the line)), or all of it. Each line's tax is credited in
    proportion, rounded half up; a whole line credits its whole tax. What is due is
    credited first; the rest (money paid) goes back as `refund_to` says, and without it
    is refused."""
    row = await locked(session, ctx.tenant_id, invoice_id)
    if row.status not in (InvoiceStatus.OPEN, InvoiceStatus.UNCOLLECTIBLE, InvoiceStatus.PAID):
        raise InvoiceStateConflict(
            f"invoice {invoice_id} is {row.status}; credit notes are issued against "
            "finalized invoices that are not void (a draft is changed or voided)",
            extra={"current_status": row.status},
        )
    invoice = await get(session, ctx.tenant_id, invoice_id)
    credited = await _credited_by_line(session, invoice_id)
    by_position = {line.position: line for line in invoice.lines}
    wanted = lines if lines is not None else [(line.position, None) for line in invoice.lines]
    made: list[CreditLine] = []
    for index, (position, amount) in enumerate(wanted):
        line = by_position.get(position)
        pointer = f"#/lines/{index}"
        if line is None:
            raise InvalidInput(
                f"invoice {invoice_id} has no line {position}",
                errors=[FieldError("not a line of the invoice", pointer=f"{pointer}/position")],
            )
        left = max(0, _gross(line) - credited.get(position, 0))  # charges only
        take = left if amount is None else amount
        if take > left or take < 0:
            raise CreditExceedsLine(
                f"line {position} has {left} minor units left to credit, not {take}",
                errors=[FieldError(f"at most {left}", pointer=f"{pointer}/amount_minor")],
                extra={"left_minor": left},
            )
        if take == 0:
            continue
        tax = _tax_share(line, take)
        made.append(CreditLine(position, line.description, take, tax))
    total = sum(line.amount_minor for line in made)
    due = due_of(row)
    if total == 0:
        raise InvalidInput(
            "nothing is left to credit", errors=[FieldError("nothing to credit", pointer="#/lines")]
        )
    refund = max(0, total - due)  # what was paid, given back
    if refund and refund_to is None:
        raise CreditExceedsDue(
            f"a credit of {total} is more than the {due} due; to give back the {refund} "
            "paid, say where it goes: refund_to `refund` or `wallet`",
            errors=[FieldError(f"at most {due} in all without refund_to", pointer="#/lines")],
            extra={"due_minor": due, "refund_minor": refund},
        )
    customer = await customers.get(session, ctx.tenant_id, invoice.customer)
    test = customer.test_clock_id is not None
    year = ctx.now.year
    sequence = await repository.next_numbers(
        session, ctx.tenant_id, "test-cn" if test else "cn", year
    )
    number = f"{'TEST-' if test else ''}CN-{year}-{sequence:06d}"
    note = CreditNote(
        id=new_id("cn"),
        number=number,
        invoice_id=invoice_id,
        reason=reason,
        lines=tuple(made),
        total_minor=total,
        tax_minor=sum(line.tax_minor for line in made),
        created_at=ctx.now,
        refund_minor=refund,
        refund_to=refund_to if refund else None,
    )
    stand = await books.standing(session, ctx.tenant_id, row)
    transfer_ids = await post_finalization(session, ctx, row, stand.book)
    legs = books.recovery(row, stand, note.id, total - refund, due)
    legs += postings.credited(
        note.id,
        invoice_id,
        stand.book,
        net_minor=total - note.tax_minor,
        tax_minor=note.tax_minor,
        refund_minor=refund if note.refund_to == "refund" else 0,
    )
    transfer_ids += await postings.post(session, ctx, legs)
    if note.refund_to == "wallet":
        transfer_ids += await wallet.give_back(session, ctx, row, stand.book, note.id, refund)
    await repository.insert_credit_note(
        session,
        id=note.id,
        tenant_id=ctx.tenant_id,
        invoice_id=invoice_id,
        number=number,
        reason=reason,
        lines=[line.__dict__ for line in made],
        total_minor=total,
        tax_minor=note.tax_minor,
        refund_minor=refund,
        refund_to=note.refund_to,
        created_at=ctx.now,
    )
    settled = row.status != InvoiceStatus.PAID and total >= due
    await repository.update_invoice(
        session,
        invoice_id,
        credited_minor=row.credited_minor + total,
        refunded_minor=row.refunded_minor + refund,
        status=InvoiceStatus.PAID if settled else row.status,
        paid_at=ctx.now if settled else row.paid_at,
        updated_at=ctx.now,
    )
    await eventlog.record(
        session,
        ctx,
        "CreditNoteIssued",
        {
            "invoice_id": invoice_id,
            "credit_note_id": note.id,
            "number": number,
            "total_minor": total,
            "currency": invoice.currency,
            "reason": reason,
            "refund_minor": refund,
            "refund_to": note.refund_to,
            "transfer_ids": transfer_ids,
        },
        customer_id=row.customer_id,
    )
    await get(session, ctx.tenant_id, invoice_id)  # checks the invariants after the write
    return note


async def of_invoice(session: AsyncSession, tenant_id: str, invoice_id: str) -> list[CreditNote]:
    await get(session, tenant_id, invoice_id)  # invoice_not_found for another tenant's
    return [note_of(row) for row in await repository.credit_notes_of(session, [invoice_id])]


def _gross(line: Line) -> int:
    return line.amount_minor if line.tax_included else line.amount_minor + line.tax_minor


def _tax_share(line: Line, amount: int) -> int:
    gross = _gross(line)
    if amount == gross:
        return line.tax_minor
    share = Decimal(line.tax_minor) * Decimal(amount) / Decimal(gross)
    return round_minor(share, rounding=ROUND_HALF_UP)


async def _credited_by_line(session: AsyncSession, invoice_id: str) -> dict[int, int]:
    credited: dict[int, int] = {}
    for row in await repository.credit_notes_of(session, [invoice_id]):
        for line in row.lines:
            credited[line["position"]] = credited.get(line["position"], 0) + line["amount_minor"]
    return credited


def note_of(row: Any) -> CreditNote:
    return CreditNote(
        id=row.id,
        number=row.number,
        invoice_id=row.invoice_id,
        reason=row.reason,
        lines=tuple(CreditLine(**line) for line in row.lines),
        total_minor=row.total_minor,
        tax_minor=row.tax_minor,
        created_at=row.created_at,
        refund_minor=row.refund_minor,
        refund_to=row.refund_to,
        refund_paid_at=row.refund_paid_at,
        refund_reference=row.refund_reference,
    )
