"""Routes: read invoices; void, mark uncollectible, record a manual payment, issue
credit notes and mark their refunds paid (admin)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import Field

from billfold.customers import clocks
from billfold.customers import service as customers
from billfold.http.bodies import json_body_schema, read_json, read_optional_json
from billfold.http.calls import AdminCall, ReadCall, idempotent
from billfold.invoicing import credit_notes, refunds, service, wallet
from billfold.invoicing.credit_notes import CreditNote, RefundTo
from billfold.invoicing.document import InvoiceStatus
from billfold.invoicing.records import Invoice, Invoicing
from billfold.invoicing.render import Document, render_html, render_pdf
from billfold.kit.context import Context
from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.ids import ID_PATTERN
from billfold.kit.schemas import Body, Instant, Out, Storable, decode_cursor, encode_cursor

router = APIRouter(tags=["invoices"])
InvoiceId = Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=40)]
CreditNoteId = Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=40)]
ExternalId = Annotated[str, Path(min_length=1, max_length=255)]
MAX_PAGE_SIZE = 100
STATUS_CONFLICT = "`invoice_status_conflict` (with the `current_status`)"


class LineOut(Out):
    position: int
    kind: str
    description: str
    meter: str | None
    quantity: str
    price: dict[str, Any] | None
    period_start: datetime | None
    period_end: datetime | None
    amount_precise: str = Field(description="major units, exact, never rounded")
    amount_minor: int = Field(description="amount_precise rounded once, half up")
    tax_rate: str
    tax_minor: int
    tax_name: str | None
    tax_included: bool = Field(description="amount_minor includes the tax")


class PaymentOut(Out):
    id: str
    amount_minor: int
    method: str
    reference: str | None
    paid_at: datetime


class InvoiceOut(Out):
    id: str
    number: str | None
    status: InvoiceStatus
    reason: str
    customer: str
    subscription_id: str | None
    currency: str
    period_start: datetime
    period_end: datetime
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    paid_minor: int
    credited_minor: int = Field(description="all its credit notes credited")
    refunded_minor: int = Field(
        description="of what was paid, what credit notes gave back (a refund or credit to "
        "the wallet); due = total - paid - credited + refunded"
    )
    due_minor: int
    finalize_at: datetime
    finalized_at: datetime | None
    posted_at: datetime | None = Field(description="its finalization, on the ledger")
    due_at: datetime | None
    paid_at: datetime | None
    voided_at: datetime | None
    void_reason: str | None
    uncollectible_at: datetime | None
    created_at: datetime
    lines: list[LineOut]
    payments: list[PaymentOut]
    seller: dict[str, Any] | None = Field(description="as at finalization")
    buyer: dict[str, Any] | None = Field(description="as at finalization")
    locale: str | None
    tax_note: str | None

    @classmethod
    def of(cls, invoice: Invoice) -> InvoiceOut:
        fields = {k: v for k, v in invoice.__dict__.items() if k not in ("lines", "payments")}
        return cls(
            due_minor=invoice.due_minor,
            lines=[
                LineOut(
                    **{
                        **line.__dict__,
                        "quantity": _text(line.quantity),
                        "amount_precise": _text(line.amount_precise),
                        "tax_rate": _text(line.tax_rate),
                        "price": dict(line.price) if line.price is not None else None,
                    }
                )
                for line in invoice.lines
            ],
            payments=[PaymentOut(**payment.__dict__) for payment in invoice.payments],
            **{
                **fields,
                "seller": dict(invoice.seller) if invoice.seller else None,
                "buyer": dict(invoice.buyer) if invoice.buyer else None,
            },
        )


class InvoicesOut(Out):
    invoices: list[InvoiceOut]
    next_cursor: str | None


class PaymentIn(Body):
    source: Literal["external", "wallet"] = Field(
        default="external",
        description="`external`: money received outside Billfold (manual); `wallet`: "
        "drawn from the customer's wallet in the invoice's currency",
    )
    amount_minor: Annotated[int, Field(gt=0, le=2**63 - 1)] | None = Field(
        default=None, description="default: the whole amount due"
    )
    allow_partial: bool = Field(
        default=False,
        description="`wallet` only: pay as much of the amount as the wallet holds "
        "instead of refusing with `insufficient_balance`",
    )
    method: Annotated[str, Field(min_length=1, max_length=40), Storable] = "manual"
    reference: Annotated[str, Field(max_length=255), Storable] | None = None
    paid_at: Instant | None = Field(default=None, description="`external` only")


class CreditLineIn(Body):
    position: Annotated[int, Field(ge=1)]
    amount_minor: Annotated[int, Field(gt=0, le=2**63 - 1)] | None = Field(
        default=None, description="tax included; default: all that is left of the line"
    )


class CreditNoteIn(Body):
    reason: Annotated[str, Field(min_length=1, max_length=500), Storable]
    lines: Annotated[list[CreditLineIn], Field(min_length=1, max_length=1000)] | None = Field(
        default=None, description="default: every line, all that is left of it"
    )
    refund_to: RefundTo | None = Field(
        default=None,
        description="where what it credits beyond what is due (money paid) goes: `refund` "
        "(owed until marked paid) or `wallet` (the customer's wallet in the invoice's "
        "currency); without it, crediting more than is due is refused",
    )


class RefundPaidIn(Body):
    reference: Annotated[str, Field(max_length=255), Storable] | None = None
    paid_at: Instant | None = None


class CreditLineOut(Out):
    position: int
    description: str
    amount_minor: int
    tax_minor: int


class CreditNoteOut(Out):
    id: str
    number: str
    invoice_id: str
    reason: str
    lines: list[CreditLineOut]
    total_minor: int
    tax_minor: int
    created_at: datetime
    refund_minor: int = Field(description="beyond what was due: money paid, given back")
    refund_to: RefundTo | None
    refund_paid_at: datetime | None
    refund_reference: str | None

    @classmethod
    def of(cls, note: CreditNote) -> CreditNoteOut:
        lines = [CreditLineOut(**line.__dict__) for line in note.lines]
        return cls(**{**note.__dict__, "lines": lines})


class CreditNotesOut(Out):
    credit_notes: list[CreditNoteOut]


class VoidIn(Body):
    reason: Annotated[str, Field(min_length=1, max_length=500), Storable]


def _text(value: Any) -> str:
    return format(value.normalize(), "f") if value is not None else "0"


@router.get("/v1/invoices", operation_id="listInvoices")
async def list_invoices(
    call: ReadCall,
    status: Annotated[list[InvoiceStatus] | None, Query(max_length=5)] = None,
    period_from: Annotated[datetime | None, Query(description="periods ending after")] = None,
    period_to: Annotated[datetime | None, Query(description="periods starting before")] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
) -> InvoicesOut:
    """Invoices, newest first, filtered by status and period."""
    return await _page(call, None, status, period_from, period_to, cursor, limit)


@router.get(
    "/v1/customers/{external_id}/invoices",
    operation_id="listCustomerInvoices",
    responses={404: {"description": "`customer_not_found`"}},
)
async def customer_invoices(
    external_id: ExternalId,
    call: ReadCall,
    status: Annotated[list[InvoiceStatus] | None, Query(max_length=5)] = None,
    period_from: Annotated[datetime | None, Query()] = None,
    period_to: Annotated[datetime | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 20,
) -> InvoicesOut:
    customer = await customers.get(call.session, call.ctx.tenant_id, external_id)
    return await _page(call, customer.id, status, period_from, period_to, cursor, limit)


async def _page(
    call: ReadCall,
    customer_id: str | None,
    status: list[InvoiceStatus] | None,
    period_from: datetime | None,
    period_to: datetime | None,
    cursor: str | None,
    limit: int,
) -> InvoicesOut:
    for name, value in (("period_from", period_from), ("period_to", period_to)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(
                f"{name} needs a time zone", errors=[FieldError("e.g. Z", parameter=name)]
            )
    after = None
    decoded = decode_cursor(cursor)
    if decoded is not None:
        created, _, invoice_id = decoded.partition("|")
        try:
            after = (datetime.fromisoformat(created), invoice_id)
        except ValueError:
            raise InvalidInput(
                "the cursor is not valid",
                errors=[FieldError("not a cursor we issued", parameter="cursor")],
            ) from None
    found = await service.page(
        call.session,
        call.ctx.tenant_id,
        customer_id=customer_id,
        statuses=[s.value for s in status or ()],
        period_from=period_from,
        period_to=period_to,
        after=after,
        limit=limit + 1,
    )
    more = len(found) > limit
    found = found[:limit]
    last = found[-1] if found else None
    return InvoicesOut(
        invoices=[InvoiceOut.of(invoice) for invoice in found],
        next_cursor=(
            encode_cursor(f"{last.created_at.isoformat()}|{last.id}") if more and last else None
        ),
    )


@router.get(
    "/v1/invoices/{invoice_id}.pdf",
    operation_id="getInvoicePdf",
    response_class=Response,
    responses={
        200: {"content": {"application/pdf": {}}, "description": "the invoice as a PDF"},
        404: {"description": "`invoice_not_found`"},
        409: {"description": "`invoice_not_paid` (a receipt of an unpaid invoice)"},
        503: {"description": "`pdf_unavailable`: the server lacks Pango"},
    },
)
async def invoice_pdf(
    invoice_id: InvoiceId, call: ReadCall, document: Document = Document.INVOICE
) -> Response:
    """The invoice (or, once paid, its receipt) as a PDF, written for its locale."""
    rendered = await service.as_rendered(
        call.session, call.ctx.tenant_id, invoice_id, call.collaborator(Invoicing)
    )
    pdf = await anyio.to_thread.run_sync(render_pdf, rendered, document)  # CPU-bound
    name = f"{rendered.number or invoice_id}{'-receipt' if document is Document.RECEIPT else ''}"
    return Response(
        pdf,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{name}.pdf"'},
    )


@router.get(
    "/v1/invoices/{invoice_id}.html",
    operation_id="getInvoiceHtml",
    response_class=HTMLResponse,
    responses={
        404: {"description": "`invoice_not_found`"},
        409: {"description": "`invoice_not_paid` (a receipt of an unpaid invoice)"},
    },
)
async def invoice_html(
    invoice_id: InvoiceId, call: ReadCall, document: Document = Document.INVOICE
) -> HTMLResponse:
    """The invoice (or, once paid, its receipt) as a standalone HTML page."""
    rendered = await service.as_rendered(
        call.session, call.ctx.tenant_id, invoice_id, call.collaborator(Invoicing)
    )
    return HTMLResponse(render_html(rendered, document))


@router.get(
    "/v1/invoices/{invoice_id}",
    operation_id="getInvoice",
    responses={404: {"description": "`invoice_not_found`"}},
)
async def get_invoice(invoice_id: InvoiceId, call: ReadCall) -> InvoiceOut:
    return InvoiceOut.of(await service.get(call.session, call.ctx.tenant_id, invoice_id))


@router.post(
    "/v1/invoices/{invoice_id}/payments",
    operation_id="recordInvoicePayment",
    status_code=201,
    responses={
        404: {"description": "`invoice_not_found`"},
        402: {"description": "`insufficient_balance` (from the wallet)"},
        409: {"description": f"{STATUS_CONFLICT} or `payment_exceeds_amount_due`"},
    },
    openapi_extra=json_body_schema(PaymentIn, required=False),
)
@idempotent
async def record_payment(invoice_id: InvoiceId, call: AdminCall) -> InvoiceOut:
    """Record a payment made outside Billfold (manual), or pay from the customer's
    wallet (`source: wallet`): the whole amount due unless `amount_minor` says less.
    Send an `Idempotency-Key`: a retry records it once."""
    body = await read_optional_json(call.request, PaymentIn) or PaymentIn()
    ctx = await _their_time(call, invoice_id)
    if body.source == "wallet":
        if body.paid_at is not None or body.reference is not None:
            raise InvalidInput(
                "a payment from the wallet is made now, referenced by the wallet",
                errors=[
                    FieldError(
                        "only for an external payment",
                        pointer="#/paid_at" if body.paid_at is not None else "#/reference",
                    )
                ],
            )
        invoice = await wallet.pay(
            call.session,
            ctx,
            invoice_id,
            amount_minor=body.amount_minor,
            allow_partial=body.allow_partial,
        )
        return InvoiceOut.of(invoice)
    if body.allow_partial:
        raise InvalidInput(
            "allow_partial is for a payment from the wallet",
            errors=[FieldError("only with source wallet", pointer="#/allow_partial")],
        )
    invoice = await service.record_payment(
        call.session,
        ctx,
        invoice_id,
        amount_minor=body.amount_minor,
        method=body.method,
        reference=body.reference,
        paid_at=body.paid_at,
    )
    return InvoiceOut.of(invoice)


@router.post(
    "/v1/invoices/{invoice_id}/credit-notes",
    operation_id="issueCreditNote",
    status_code=201,
    responses={
        404: {"description": "`invoice_not_found`"},
        409: {
            "description": f"{STATUS_CONFLICT} or `credit_exceeds_amount_due` (more than is "
            "due, without `refund_to`)"
        },
        422: {"description": "`credit_exceeds_line`, `invalid_input`"},
    },
    openapi_extra=json_body_schema(CreditNoteIn),
)
@idempotent
async def issue_credit_note(invoice_id: InvoiceId, call: AdminCall) -> CreditNoteOut:
    """Credit a finalized invoice, in full or line by line, with a reason: it lowers what
    is due and never edits the invoice; beyond what is due, it gives money paid back as
    `refund_to` says. Send an `Idempotency-Key`."""
    body = await read_json(call.request, CreditNoteIn)
    lines = [(line.position, line.amount_minor) for line in body.lines] if body.lines else None
    ctx = await _their_time(call, invoice_id)
    note = await credit_notes.issue(
        call.session, ctx, invoice_id, reason=body.reason, lines=lines, refund_to=body.refund_to
    )
    return CreditNoteOut.of(note)


@router.post(
    "/v1/invoices/{invoice_id}/credit-notes/{credit_note_id}/refund-paid",
    operation_id="markRefundPaid",
    responses={
        404: {"description": "`invoice_not_found`, `credit_note_not_found`"},
        409: {"description": "`no_refund_owed` (the credit note gave nothing back as a refund)"},
    },
    openapi_extra=json_body_schema(RefundPaidIn, required=False),
)
async def mark_refund_paid(
    invoice_id: InvoiceId, credit_note_id: CreditNoteId, call: AdminCall
) -> CreditNoteOut:
    """Mark a credit note's refund paid out by hand (until the payment connector pays
    refunds): it moves from refunds payable to cash, once; marking it again changes
    nothing."""
    body = await read_optional_json(call.request, RefundPaidIn) or RefundPaidIn()
    ctx = await _their_time(call, invoice_id)
    note = await refunds.mark_paid(
        call.session,
        ctx,
        invoice_id,
        credit_note_id,
        reference=body.reference,
        paid_at=body.paid_at,
    )
    return CreditNoteOut.of(note)


@router.get(
    "/v1/invoices/{invoice_id}/credit-notes",
    operation_id="listCreditNotes",
    responses={404: {"description": "`invoice_not_found`"}},
)
async def list_credit_notes(invoice_id: InvoiceId, call: ReadCall) -> CreditNotesOut:
    notes = await credit_notes.of_invoice(call.session, call.ctx.tenant_id, invoice_id)
    return CreditNotesOut(credit_notes=[CreditNoteOut.of(note) for note in notes])


@router.post(
    "/v1/invoices/{invoice_id}/void",
    operation_id="voidInvoice",
    responses={404: {"description": "`invoice_not_found`"}, 409: {"description": STATUS_CONFLICT}},
    openapi_extra=json_body_schema(VoidIn),
)
async def void_invoice(invoice_id: InvoiceId, call: AdminCall) -> InvoiceOut:
    """Void an invoice that has no payment: nothing is due any more."""
    body = await read_json(call.request, VoidIn)
    ctx = await _their_time(call, invoice_id)
    return InvoiceOut.of(await service.void(call.session, ctx, invoice_id, reason=body.reason))


@router.post(
    "/v1/invoices/{invoice_id}/mark-uncollectible",
    operation_id="markInvoiceUncollectible",
    responses={404: {"description": "`invoice_not_found`"}, 409: {"description": STATUS_CONFLICT}},
)
async def mark_uncollectible(invoice_id: InvoiceId, call: AdminCall) -> InvoiceOut:
    """Write an open invoice off as uncollectible: what is due goes to bad debt on the
    ledger. A later payment still settles it (taking what it pays back from bad debt);
    marking it again changes nothing."""
    ctx = await _their_time(call, invoice_id)
    return InvoiceOut.of(await service.mark_uncollectible(call.session, ctx, invoice_id))


async def _their_time(call: AdminCall, invoice_id: str) -> Context:
    """The call's context at the invoice's customer's time: a test clock's, for a
    test-mode customer (their payments and credit notes happen in simulated time)."""
    invoice = await service.get(call.session, call.ctx.tenant_id, invoice_id)
    return await clocks.context_for(call.session, call.ctx, invoice.customer)
