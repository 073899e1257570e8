"""The invoice as a value: lines rounded once, totals summed from the rounded lines, and
the invariants `check` asserts, under `python -O` too."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from billfold.invoicing import Invoice, InvoiceStatus, LineKind, Party, Payment, check
from billfold.kit.invariants import InvariantViolation
from billfold.money import UnknownCurrency
from tests.invoicing.examples import ISSUED, charge, invoice


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("10.005", "USD", 1001),  # half up, not to even
        ("10.015", "USD", 1002),
        ("-10.005", "USD", -1001),  # half up is away from zero, for credits too
        ("4.9380", "USD", 494),
        ("1496.7741935483870967741935", "USD", 149677),
        ("1234.5", "JPY", 1235),  # no minor units
        ("1.2345", "KWD", 1235),  # three
        ("0.00005", "CLF", 1),  # four
    ],
)
def test_a_line_is_rounded_once_half_up_and_keeps_its_precise_amount(
    amount: str, currency: str, minor: int
) -> None:
    kind = LineKind.PRORATION
    line = charge(amount, currency, kind=kind)
    assert line.amount_minor == minor
    assert line.amount_precise == Decimal(amount)


def test_totals_are_sums_of_the_rounded_lines_not_a_rounding_of_their_sum() -> None:
    # three usage lines of 0.005 each: each rounds to 0.01; their precise sum would be 0.02
    lines = [charge("0.005", kind=LineKind.USAGE, description=f"usage {n}") for n in range(3)]
    built = invoice(lines)
    assert [line.amount_minor for line in built.lines] == [1, 1, 1]
    assert (built.subtotal_minor, built.tax_minor, built.total_minor) == (3, 0, 3)
    assert (built.paid_minor, built.due_minor) == (0, 3)


def test_a_payment_lowers_what_is_due_and_a_paid_invoice_owes_nothing() -> None:
    lines = [charge("29.00"), charge("-5.00", kind=LineKind.DISCOUNT, description="Coupon")]
    payment = Payment(ISSUED, 1000, "manual", "bank transfer 42")
    partly = invoice(lines, payments=[payment])
    assert (partly.total_minor, partly.paid_minor, partly.due_minor) == (2400, 1000, 1400)
    rest = Payment(ISSUED, 1400, "manual")
    paid = invoice(lines, payments=[payment, rest], status=InvoiceStatus.PAID)
    assert paid.due_minor == 0


def _open() -> Invoice:
    return invoice([charge("29.00", kind=LineKind.RECURRING), charge("1.50", kind=LineKind.USAGE)])


# Each way an invoice can be wrong, and the invariant that says so.
TAMPERED = [
    (lambda i: replace(i, total_minor=i.total_minor + 1), "sum of the rounded lines plus tax"),
    (lambda i: replace(i, subtotal_minor=i.subtotal_minor - 1), "subtotal"),
    (lambda i: replace(i, tax_minor=1), "sum of the lines' tax"),
    (lambda i: replace(i, due_minor=0), "total less what is paid"),
    (
        lambda i: replace(i, lines=(replace(i.lines[0], amount_minor=2901), *i.lines[1:])),
        "rounded once",
    ),
    (
        lambda i: replace(
            i, lines=(replace(i.lines[0], amount_precise=Decimal("29.005")), *i.lines[1:])
        ),
        "rounded once",  # 29.005 rounds to 2901, not the 2900 stored
    ),
    (lambda i: replace(i, lines=(replace(i.lines[0], tax_rate=Decimal(101)),)), "percentage"),
    (lambda i: replace(i, lines=(replace(i.lines[0], tax_minor=-5),)), "amount's sign"),
    (lambda i: replace(i, number=None), "number once finalized"),
    (lambda i: replace(i, status=InvoiceStatus.DRAFT), "number once finalized"),
    (lambda i: replace(i, status=InvoiceStatus.PAID), "nothing due"),
    (lambda i: replace(i, due_at=datetime(2026, 1, 1, tzinfo=UTC)), "due after it is issued"),
    (lambda i: replace(i, issued_at=datetime(2026, 2, 1)), "aware"),
    # An empty period is a first invoice billed ahead; a period that runs backwards is not.
    (lambda i: replace(i, period_end=i.period_start - timedelta(days=1)), "ends after it starts"),
]


@pytest.mark.parametrize(("tamper", "message"), TAMPERED)
def test_check_refuses_an_invoice_that_breaks_an_invariant(
    tamper: Callable[[Invoice], Invoice], message: str
) -> None:
    good = _open()
    assert check(good) is good
    with pytest.raises(InvariantViolation, match=message):
        check(tamper(good))


def test_check_refuses_a_currency_without_minor_units() -> None:
    with pytest.raises(UnknownCurrency):
        check(replace(_open(), currency="XAU"))


@pytest.mark.parametrize(
    ("kind", "amount"),
    [
        (LineKind.RECURRING, "-1.00"),
        (LineKind.USAGE, "-0.01"),
        (LineKind.MINIMUM, "-3"),
        (LineKind.DISCOUNT, "1.00"),
        (LineKind.CREDIT, "0.01"),
    ],
)
def test_each_kind_of_line_has_its_sign(kind: LineKind, amount: str) -> None:
    lines = [charge("100.00"), charge(amount, kind=kind, description=str(kind))]
    with pytest.raises(InvariantViolation, match=f"a {kind} line's amount has its sign"):
        invoice(lines)


def test_a_proration_is_a_charge_or_a_credit() -> None:
    # the story of STYLE.md: pro's unused days credited, studio's remaining days charged
    credit = charge("-14.967741935483870967741935", kind=LineKind.PRORATION)
    debit = charge("25.290322580645161290322581", kind=LineKind.PRORATION)
    assert [line.amount_minor for line in invoice([credit, debit]).lines] == [-1497, 2529]


def test_nothing_negative_is_due() -> None:
    # a credit larger than the charges: period close carries the rest, never writes it here
    lines = [charge("10.00"), charge("-12.00", kind=LineKind.CREDIT, description="Credit")]
    with pytest.raises(InvariantViolation, match="nothing negative is due"):
        invoice(lines)
    overpaid = [Payment(ISSUED, 1001, "manual")]
    with pytest.raises(InvariantViolation, match="nothing negative is due"):
        invoice([charge("10.00")], payments=overpaid)


def test_a_draft_has_no_number_and_no_payments() -> None:
    draft = invoice([charge("29.00")], status=InvoiceStatus.DRAFT)
    assert (draft.number, draft.issued_at) == (None, None)
    with pytest.raises(InvariantViolation, match="a draft has no payments"):
        check(
            replace(
                draft, payments=(Payment(ISSUED, 100, "manual"),), paid_minor=100, due_minor=2800
            )
        )


def test_a_party_is_checked() -> None:
    with pytest.raises(InvariantViolation, match="ISO 3166-1"):
        Party("Ada", (), "Germany")
    with pytest.raises(InvariantViolation, match="ISO 3166-2"):
        Party("Ada", (), "US", region="California")
    with pytest.raises(InvariantViolation, match="has a name"):
        Party(" ", (), "US")


def test_check_survives_python_dash_o() -> None:
    # `assert` vanishes under -O; invariant() does not
    program = (
        "from dataclasses import replace\n"
        "from billfold.kit.invariants import InvariantViolation\n"
        "from billfold.invoicing import check\n"
        "from tests.invoicing.examples import charge, invoice\n"
        "assert False, 'asserts are off'\n"
        "good = invoice([charge('29.00')])\n"
        "try:\n"
        "    check(replace(good, total_minor=1))\n"
        "except InvariantViolation as error:\n"
        "    print('refused:', error)\n"
    )
    run = subprocess.run(  # noqa: S603 (this interpreter, a fixed program)
        [sys.executable, "-O", "-c", program],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).parents[2],
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "refused: the total is the sum of the rounded lines plus tax"


def test_the_package_is_the_public_surface_and_leaves_weasyprint_unloaded() -> None:
    # WeasyPrint loads Pango (~0.5 s): importing invoicing must not, only a PDF does
    program = (
        "import sys, billfold.invoicing as invoicing\n"
        "names = invoicing.__all__\n"
        "missing = [name for name in names if not hasattr(invoicing, name)]\n"
        "print(sorted(names) == names, missing, 'weasyprint' in sys.modules)\n"
    )
    run = subprocess.run(  # noqa: S603 (this interpreter, a fixed program)
        [sys.executable, "-c", program], capture_output=True, text=True, check=False
    )
    assert run.stdout.strip() == "True [] False", run.stderr
