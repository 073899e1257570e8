"""Taxes: the built-in provider (exclusive, inclusive, regions, reverse charge), its
configuration refused with the path at fault, and providers loaded by name."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from billfold.invoicing import (
    BuiltinTaxProvider,
    Line,
    LineKind,
    Party,
    TaxConfig,
    TaxConfigError,
    TaxQuote,
    apply_quote,
    load_provider,
    parse_tax_config,
)
from billfold.invoicing.taxes import EU, REVERSE_CHARGE_NOTE, LineTax, tax_on
from billfold.invoicing.taxids import valid_format
from tests.invoicing.examples import SELLER, buyer, charge, invoice

CONFIG = {
    "inclusive": False,
    "reverse_charge": "EU",
    "rates": [
        {"country": "DE", "rate": "19", "name": "VAT"},
        {"country": "FR", "rate": "20", "name": "TVA"},
        {"country": "US", "region": "CA", "rate": "7.25", "name": "Sales tax"},
        {"country": "CA", "rate": "5", "name": "GST"},
        {"country": "CA", "region": "QC", "rate": "14.975", "name": "GST+QST"},
    ],
}


def provider(**changes: Any) -> BuiltinTaxProvider:
    return BuiltinTaxProvider(parse_tax_config({**CONFIG, **changes}))


def taxed(lines: Sequence[Line], party: Party, **changes: Any) -> tuple[Line, ...]:
    quote = provider(**changes).quote(SELLER, party, "EUR", lines)
    return apply_quote(lines, quote)


def test_exclusive_tax_comes_on_top_of_each_rounded_line_rounded_once_half_up() -> None:
    # 11.50 x 19 % = 2.185: half up gives 2.19 (half even would give 2.18)
    lines = taxed([charge("11.50"), charge("0.004", kind=LineKind.USAGE)], buyer("DE"))
    assert [(line.amount_minor, line.tax_minor) for line in lines] == [(1150, 219), (0, 0)]
    assert (lines[0].tax_rate, lines[0].tax_name, lines[0].tax_included) == (19, "VAT", False)
    built = invoice(lines)
    assert (built.subtotal_minor, built.tax_minor, built.total_minor) == (1150, 219, 1369)


def test_inclusive_tax_is_the_part_of_the_rounded_gross_line_that_is_tax() -> None:
    lines = taxed([charge("11.90"), charge("9.99")], buyer("DE"), inclusive=True)
    # 11.90 x 19/119 = 1.90 exactly; 9.99 x 19/119 = 1.59504... -> 1.60
    assert [(line.gross_minor, line.tax_minor, line.net_minor) for line in lines] == [
        (1190, 190, 1000),
        (999, 160, 839),
    ]
    built = invoice(lines)
    assert (built.subtotal_minor, built.tax_minor, built.total_minor) == (1839, 350, 2189)


def test_a_region_with_a_rate_of_its_own_uses_it_and_the_others_take_the_countrys() -> None:
    line = charge("100.00")
    rates = {
        (country, region): taxed([line], buyer(country, region=region))[0].tax_minor
        for country, region in [
            ("US", "CA"),
            ("US", "NY"),  # no rate: the seller does not collect there
            ("US", None),
            ("CA", "QC"),
            ("CA", "ON"),  # the country's rate
            ("JP", None),  # no rate at all: an export
        ]
    }
    assert rates == {
        ("US", "CA"): 725,
        ("US", "NY"): 0,
        ("US", None): 0,
        ("CA", "QC"): 1498,  # 14.975 of 100.00 = 14.975 -> 14.98
        ("CA", "ON"): 500,
        ("JP", None): 0,
    }


def test_reverse_charge_for_a_business_in_another_country_of_the_area() -> None:
    french_business = buyer("FR", tax_id="FR 12 345678901")
    quote = provider().quote(SELLER, french_business, "EUR", [charge("100.00")])
    assert quote == TaxQuote((LineTax(Decimal(0), 0),), included=False, note=REVERSE_CHARGE_NOTE)
    built = invoice(apply_quote([charge("100.00")], quote), tax_note=quote.note)
    assert (built.tax_minor, built.total_minor, built.tax_note) == (0, 10000, REVERSE_CHARGE_NOTE)


@pytest.mark.parametrize(
    ("party", "tax_minor"),
    [
        (buyer("FR", tax_id="FR123"), 2000),  # not a French VAT number: taxed as a consumer
        (buyer("FR"), 2000),  # no tax id
        (buyer("DE", tax_id="DE987654321"), 1900),  # the seller's own country: no reverse charge
    ],
)
def test_no_reverse_charge_without_a_well_formed_tax_id_from_another_country(
    party: Party, tax_minor: int
) -> None:
    quote = provider().quote(SELLER, party, "EUR", [charge("100.00")])
    assert (quote.lines[0].tax_minor, quote.note) == (tax_minor, None)


def test_reverse_charge_keeps_an_inclusive_price_whole() -> None:
    lines = taxed([charge("11.90")], buyer("FR", tax_id="FR12345678901"), inclusive=True)
    assert (lines[0].gross_minor, lines[0].tax_minor, lines[0].net_minor) == (1190, 0, 1190)


def test_discounts_lower_the_tax_and_applied_credits_do_not() -> None:
    lines = taxed(
        [
            charge("100.00"),
            charge("-10.00", kind=LineKind.DISCOUNT, description="Coupon"),
            charge("-20.00", kind=LineKind.CREDIT, description="Prepaid credit"),
        ],
        buyer("DE"),
    )
    assert [line.tax_minor for line in lines] == [1900, -190, 0]
    built = invoice(lines)
    assert (built.subtotal_minor, built.tax_minor, built.total_minor) == (7000, 1710, 8710)


@pytest.mark.parametrize(
    ("amount_minor", "rate", "included", "tax_minor"),
    [
        (1150, "19", False, 219),  # 218.5
        (-1150, "19", False, -219),  # away from zero
        (1, "50", False, 1),  # 0.5
        (1, "49.999", False, 0),
        (999, "19", True, 160),
        (10000, "0", True, 0),
        (10000, "100", False, 10000),
        (2**62, "7.25", False, 334347236335985623),  # exact past any float
    ],
)
def test_tax_on_a_rounded_amount(
    amount_minor: int, rate: str, included: bool, tax_minor: int
) -> None:
    assert tax_on(amount_minor, Decimal(rate), included=included) == tax_minor


BAD_CONFIGS = [
    ([], "#/taxes", "a mapping"),
    ({"inclusive": "yes"}, "#/taxes/inclusive", "true or false"),
    ({"vat": []}, "#/taxes/vat", "no field"),
    ({"reverse_charge": "EEA"}, "#/taxes/reverse_charge", "list of countries"),
    ({"reverse_charge": ["DE", "de"]}, "#/taxes/reverse_charge/1", "ISO 3166-1"),
    ({"reverse_charge": ["DE", "CH"]}, "#/taxes/reverse_charge/1", "no VAT number format"),
    ({"reverse_charge": ["DE", "FR", "DE"]}, "#/taxes/reverse_charge/2", "listed twice"),
    ({"reverse_charge_note": ""}, "#/taxes/reverse_charge_note", "a text"),
    ({"rates": {"DE": 19}}, "#/taxes/rates", "a list"),
    ({"rates": ["DE"]}, "#/taxes/rates/0", "a mapping"),
    ({"rates": [{"country": "DE", "rate": "19"}]}, "#/taxes/rates/0/name", "needs name"),
    ({"rates": [{"country": "DE", "name": "VAT"}]}, "#/taxes/rates/0/rate", "needs rate"),
    (
        {"rates": [{"country": "Germany", "rate": "19", "name": "VAT"}]},
        "#/taxes/rates/0/country",
        "ISO",
    ),
    (
        {"rates": [{"country": "US", "region": "California", "rate": "7", "name": "Tax"}]},
        "#/taxes/rates/0/region",
        "subdivision",
    ),
    ({"rates": [{"country": "DE", "rate": "19", "name": ""}]}, "#/taxes/rates/0/name", "a name"),
    (
        {"rates": [{"country": "DE", "rate": "19%", "name": "VAT"}]},
        "#/taxes/rates/0/rate",
        "decimal",
    ),
    (
        {"rates": [{"country": "DE", "rate": "-1", "name": "VAT"}]},
        "#/taxes/rates/0/rate",
        "0 to 100",
    ),
    (
        {"rates": [{"country": "DE", "rate": "101", "name": "VAT"}]},
        "#/taxes/rates/0/rate",
        "0 to 100",
    ),
    (
        {"rates": [{"country": "DE", "rate": "NaN", "name": "VAT"}]},
        "#/taxes/rates/0/rate",
        "0 to 100",
    ),
    (
        {"rates": [{"country": "DE", "rate": True, "name": "VAT"}]},
        "#/taxes/rates/0/rate",
        "decimal",
    ),
    (
        {"rates": [{"country": "DE", "rate": "19", "name": "VAT", "reduced": "7"}]},
        "#/taxes/rates/0/reduced",
        "no field",
    ),
    (
        {
            "rates": [
                {"country": "US", "region": "CA", "rate": "7.25", "name": "Sales tax"},
                {"country": "US", "region": "CA", "rate": "7.5", "name": "Sales tax"},
            ]
        },
        "#/taxes/rates/1",
        "US-CA has a rate already",
    ),
]


@pytest.mark.parametrize(("config", "pointer", "message"), BAD_CONFIGS)
def test_a_bad_configuration_is_refused_with_its_path(
    config: Any, pointer: str, message: str
) -> None:
    with pytest.raises(TaxConfigError, match=message) as refused:
        parse_tax_config(config, path="#/taxes")
    assert refused.value.code == "invalid_tax_config"
    assert [error.pointer for error in refused.value.errors] == [pointer]
    assert str(refused.value).startswith(f"{pointer}: ")


def test_a_configuration_is_read_into_plain_values() -> None:
    config = parse_tax_config(
        {
            "inclusive": True,
            "reverse_charge": ["DE", "AT"],
            "rates": [
                {"country": "AT", "rate": 20, "name": "USt"},
                {"country": "DE", "rate": 19.0, "name": "MwSt"},
            ],
        }
    )
    assert config.inclusive is True
    assert config.reverse_charge == frozenset({"DE", "AT"})
    assert [(rate.country, rate.region, rate.rate) for rate in config.rates] == [
        ("AT", None, Decimal(20)),
        ("DE", None, Decimal("19.0")),
    ]
    assert parse_tax_config({}) == TaxConfig()
    assert parse_tax_config({"reverse_charge": "EU"}).reverse_charge == EU
    assert len(EU) == 27


@pytest.mark.parametrize(
    ("country", "tax_id", "valid"),
    [
        ("DE", "DE123456789", True),
        ("DE", "de 123.456.789", True),
        ("DE", "DE12345678", False),
        ("DE", "123456789", False),  # the prefix is part of the number
        ("GR", "EL123456789", True),  # Greece's prefix is EL
        ("GR", "GR123456789", False),
        ("AT", "ATU12345678", True),
        ("NL", "NL123456789B01", True),
        ("NL", "NL123456789001", False),
        ("FR", "FRXX123456789", True),
        ("FR", "FRIO123456789", False),  # I and O are not used
        ("IE", "IE1234567WA", True),
        ("SE", "SE123456789001", True),
        ("CH", "CHE123456789", False),  # outside the formats known: never valid
    ],
)
def test_tax_ids_are_checked_by_format(country: str, tax_id: str, valid: bool) -> None:
    assert valid_format(country, tax_id) is valid


class FlatTax:
    """An external provider as a test would plug one in: 10 % on everything."""

    def __init__(self, config: TaxConfig) -> None:
        self.included = config.inclusive

    def quote(self, seller: Party, buyer: Party, currency: str, lines: Sequence[Line]) -> TaxQuote:
        taxes = [
            LineTax(Decimal(10), tax_on(line.amount_minor, Decimal(10), included=self.included))
            for line in lines
        ]
        return TaxQuote(tuple(taxes), self.included, note=f"taxed in {currency} by FlatTax")


def flat_tax(config: TaxConfig) -> FlatTax:
    return FlatTax(config)


def not_a_provider(config: TaxConfig) -> object:
    return object()


def test_an_external_provider_replaces_the_builtin_one_through_the_port() -> None:
    assert isinstance(load_provider("builtin", TaxConfig()), BuiltinTaxProvider)
    external = load_provider("tests.invoicing.test_taxes:flat_tax", TaxConfig())
    assert isinstance(external, FlatTax)
    quote = external.quote(SELLER, buyer("DE"), "EUR", [charge("12.34")])
    assert (quote.lines[0].tax_minor, quote.note) == (123, "taxed in EUR by FlatTax")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("avalara", '"builtin" or "package.module:factory"'),
        ("tests.invoicing.test_taxes:", '"builtin" or "package.module:factory"'),
        ("no_such_package.taxes:factory", "cannot import no_such_package.taxes"),
        ("tests.invoicing.test_taxes:missing", "has no callable missing"),
        ("tests.invoicing.test_taxes:CONFIG", "has no callable CONFIG"),
        ("tests.invoicing.test_taxes:not_a_provider", "did not make a TaxProvider"),
    ],
)
def test_a_provider_that_cannot_be_loaded_is_refused(spec: str, message: str) -> None:
    with pytest.raises(TaxConfigError, match=message) as refused:
        load_provider(spec, TaxConfig())
    assert [error.pointer for error in refused.value.errors] == ["#/tax_provider"]
