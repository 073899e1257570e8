"""Properties of invoices and taxes, for any lines, currency and rate (hypothesis):
the total is the sum of the rounded lines plus their tax, computed here again by other
means; with inclusive tax each line's net plus tax is its gross."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext

from hypothesis import assume, given
from hypothesis import strategies as st

from billfold.invoicing import BuiltinTaxProvider, LineKind, TaxConfig, apply_quote, new_line
from billfold.invoicing.taxes import TaxRate, tax_on
from tests.invoicing.examples import JANUARY, SELLER, buyer, invoice

CURRENCIES = st.sampled_from(["USD", "JPY", "KWD", "CLF"])  # 2, 0, 3 and 4 minor units
UNITS = {"USD": 2, "JPY": 0, "KWD": 3, "CLF": 4}
RATES = st.decimals(min_value=0, max_value=100, places=3)
AMOUNTS = st.decimals(min_value=0, max_value=10**9, places=8)
KINDS = st.sampled_from(list(LineKind))
LINES = st.lists(st.tuples(KINDS, AMOUNTS), min_size=1, max_size=12)
NEGATIVE = (LineKind.DISCOUNT, LineKind.CREDIT)


def rounded(amount: Decimal, currency: str) -> int:
    """The rounding an invoice line gets, done here with Decimal's own quantize."""
    return int(
        amount.quantize(Decimal(1).scaleb(-UNITS[currency]), rounding=ROUND_HALF_UP).scaleb(
            UNITS[currency]
        )
    )


def reference_tax(amount_minor: int, rate: Decimal, included: bool) -> int:
    with localcontext() as context:
        context.prec = 100
        share = rate / (100 + rate) if included else rate / 100
        return int((amount_minor * share).quantize(Decimal(1), rounding=ROUND_HALF_UP))


@given(CURRENCIES, RATES, st.booleans(), LINES)
def test_totals_are_the_sum_of_the_rounded_lines_plus_tax(
    currency: str, rate: Decimal, inclusive: bool, specs: list[tuple[LineKind, Decimal]]
) -> None:
    signed = [(kind, -amount if kind in NEGATIVE else amount) for kind, amount in specs]
    lines = [
        new_line(f"line {n}", kind, Decimal(1), amount, currency, period=JANUARY)
        for n, (kind, amount) in enumerate(signed)
    ]
    config = TaxConfig(inclusive=inclusive, rates=(TaxRate("DE", None, rate, "VAT"),))
    quote = BuiltinTaxProvider(config).quote(SELLER, buyer("DE"), currency, lines)
    taxed = apply_quote(lines, quote)
    amounts = [rounded(amount, currency) for _, amount in signed]
    taxes = [
        0 if kind is LineKind.CREDIT else reference_tax(minor, rate, inclusive)
        for (kind, _), minor in zip(signed, amounts, strict=True)
    ]
    gross = sum(amounts) if inclusive else sum(amounts) + sum(taxes)
    assume(gross >= 0)  # a larger credit is carried forward, never invoiced

    built = invoice(taxed, currency=currency)

    assert [line.amount_minor for line in built.lines] == amounts
    assert [line.tax_minor for line in built.lines] == taxes
    assert built.tax_minor == sum(taxes)
    assert built.total_minor == sum(line.net_minor for line in built.lines) + sum(taxes)
    assert built.total_minor == gross
    assert built.due_minor == gross


@given(st.integers(min_value=-(10**15), max_value=10**15), RATES)
def test_inclusive_net_plus_tax_is_gross_for_every_line(gross_minor: int, rate: Decimal) -> None:
    kind = LineKind.PRORATION  # the one kind that may be either sign
    line = new_line("fee", kind, Decimal(1), Decimal(gross_minor).scaleb(-2), "EUR")
    config = TaxConfig(inclusive=True, rates=(TaxRate("DE", None, rate, "VAT"),))
    quote = BuiltinTaxProvider(config).quote(SELLER, buyer("DE"), "EUR", [line])
    (taxed,) = apply_quote([line], quote)
    assert taxed.gross_minor == gross_minor
    assert taxed.net_minor + taxed.tax_minor == taxed.gross_minor
    # the tax is the exact included share, off by at most half a minor unit
    exact = Decimal(gross_minor) * rate
    with localcontext() as context:
        context.prec = 100
        assert abs(taxed.tax_minor - exact / (100 + rate)) <= Decimal("0.5")


@given(st.integers(min_value=0, max_value=2**63 - 1), RATES, st.booleans())
def test_a_credits_tax_mirrors_the_charges(
    amount_minor: int, rate: Decimal, included: bool
) -> None:
    tax = tax_on(amount_minor, rate, included=included)
    assert tax_on(-amount_minor, rate, included=included) == -tax
    assert 0 <= tax <= amount_minor
    assert tax == reference_tax(amount_minor, rate, included)
