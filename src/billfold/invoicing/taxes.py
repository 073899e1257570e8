"""Taxes behind a port: `TaxProvider.quote` gives each line its rate and its tax.

The built-in provider applies configured rates by the buyer's country, and region where
one is configured, exclusive or inclusive, with reverse charge inside an area such as
the EU. An external tax service replaces it through the same port: `load_provider`
takes `"builtin"` or `"package.module:factory"` (docs/invoices.md, decision 0034).

Tax is computed on each rounded line and rounded once, half up (away from zero), in
exact arithmetic: Decimal and fractions, never float.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Final, NoReturn, Protocol, runtime_checkable

from billfold.invoicing.document import COUNTRY, REGION, Line, LineKind, Party
from billfold.invoicing.taxids import VAT_FORMATS, knows_format, valid_format
from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.invariants import invariant

REVERSE_CHARGE_NOTE: Final = (
    "Reverse charge: the customer accounts for the VAT "
    "(Article 196, Council Directive 2006/112/EC)."
)
# The EU's member states, for a configuration that names its area in one word: the
# countries whose VAT number formats `taxids` knows.
EU: Final = frozenset(VAT_FORMATS)


class TaxConfigError(InvalidInput):
    code = "invalid_tax_config"
    title = "The tax configuration is not valid"


@dataclass(frozen=True)
class TaxRate:
    country: str
    region: str | None  # None: the whole country, unless a region has a rate of its own
    rate: Decimal  # percent
    name: str  # what the invoice calls it: "VAT", "Sales tax"


@dataclass(frozen=True)
class TaxConfig:
    """The built-in provider's configuration (a section of the plans file to come)."""

    inclusive: bool = False  # prices include the tax
    reverse_charge: frozenset[str] = frozenset()  # the countries of a reverse-charge area
    reverse_charge_note: str = REVERSE_CHARGE_NOTE
    rates: tuple[TaxRate, ...] = ()


@dataclass(frozen=True)
class LineTax:
    rate: Decimal  # percent
    tax_minor: int
    name: str | None = None


@dataclass(frozen=True)
class TaxQuote:
    lines: tuple[LineTax, ...]  # one for each line quoted, in order
    included: bool  # the lines' amounts include their tax
    note: str | None = None  # wording the invoice must carry, such as reverse charge


@runtime_checkable
class TaxProvider(Protocol):
    def quote(
        self, seller: Party, buyer: Party, currency: str, lines: Sequence[Line]
    ) -> TaxQuote: ...


def tax_on(amount_minor: int, rate: Decimal, *, included: bool) -> int:
    """The tax on a rounded amount at `rate` percent, rounded once, half up (away from
    zero): `amount * rate / 100`, or with the tax included, `amount * rate / (100 +
    rate)`. Exact at any size."""
    invariant(rate.is_finite() and 0 <= rate <= 100, "a tax rate is a percentage from 0 to 100")
    share = Fraction(rate) / (100 + Fraction(rate) if included else 100)
    return _half_up(amount_minor * share)


def apply_quote(lines: Sequence[Line], quote: TaxQuote) -> tuple[Line, ...]:
    """`lines`, each with the tax `quote` gives it."""
    invariant(len(quote.lines) == len(lines), "a quote has one tax for each line")
    return tuple(
        line.with_tax(tax.rate, tax.tax_minor, included=quote.included, name=tax.name)
        for line, tax in zip(lines, quote.lines, strict=True)
    )


class BuiltinTaxProvider:
    """Rates by the buyer's country (and region, where one has a rate of its own).

    - A buyer in a country without a rate pays no tax (an export, or a US state where
      the seller does not collect).
    - Reverse charge: a buyer in the reverse-charge area, in another country than the
      seller's, with a tax id in the format of their country's VAT numbers, pays no tax,
      and the invoice carries the note. The format is checked, not the registration
      (no VIES lookup; see `billfold.invoicing.taxids`).
    - `credit` lines are never taxed: an applied credit is a means of payment, so it
      lowers what is due, not the tax. Discounts and prorations are taxed (a negative
      line has a negative tax).
    """

    def __init__(self, config: TaxConfig) -> None:
        self.config = config
        self._rates = {(rate.country, rate.region): rate for rate in config.rates}

    def quote(self, seller: Party, buyer: Party, currency: str, lines: Sequence[Line]) -> TaxQuote:
        included = self.config.inclusive
        if self.reverse_charged(seller, buyer):
            untaxed = LineTax(Decimal(0), 0)
            return TaxQuote((untaxed,) * len(lines), included, self.config.reverse_charge_note)
        rate = self.rate_for(buyer)
        return TaxQuote(tuple(self._tax(line, rate, included) for line in lines), included)

    def reverse_charged(self, seller: Party, buyer: Party) -> bool:
        return (
            buyer.country is not None
            and buyer.country in self.config.reverse_charge
            and buyer.country != seller.country
            and buyer.tax_id is not None
            and valid_format(buyer.country, buyer.tax_id)
        )

    def rate_for(self, buyer: Party) -> TaxRate | None:
        """The region's rate where it has one, else the country's, else none (and none
        for a buyer whose country is not known)."""
        if buyer.country is None:
            return None
        regional = self._rates.get((buyer.country, buyer.region)) if buyer.region else None
        return regional or self._rates.get((buyer.country, None))

    @staticmethod
    def _tax(line: Line, rate: TaxRate | None, included: bool) -> LineTax:
        if rate is None or line.kind is LineKind.CREDIT:
            return LineTax(Decimal(0), 0)
        return LineTax(
            rate.rate, tax_on(line.amount_minor, rate.rate, included=included), rate.name
        )


def load_provider(spec: str, config: TaxConfig) -> TaxProvider:
    """`"builtin"`, or `"package.module:factory"`: an external provider, made by calling
    `factory(config)`. `TaxConfigError` when the spec names nothing that makes one."""
    if spec == "builtin":
        return BuiltinTaxProvider(config)
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        _refuse_spec(spec, 'the tax provider is "builtin" or "package.module:factory"')
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        _refuse_spec(spec, f"cannot import {module_name}: {error}")
    factory = getattr(module, attribute, None)
    if not callable(factory):
        _refuse_spec(spec, f"{module_name} has no callable {attribute}")
    provider = factory(config)
    if not isinstance(provider, TaxProvider):
        _refuse_spec(spec, f"{spec} did not make a TaxProvider (an object with quote())")
    return provider


def parse_tax_config(config: Any, *, path: str = "#") -> TaxConfig:
    """`config` (a mapping, as YAML or JSON gives it) checked into a `TaxConfig`;
    `TaxConfigError` naming the path of the first fault otherwise."""
    if not isinstance(config, Mapping):
        _refuse(path, "the tax configuration is a mapping")
    for key in config:
        if key not in ("inclusive", "reverse_charge", "reverse_charge_note", "rates"):
            _refuse(f"{path}/{key}", f"the tax configuration has no field {key!r}")
    inclusive = config.get("inclusive", False)
    if not isinstance(inclusive, bool):
        _refuse(f"{path}/inclusive", f"inclusive is true or false, not {inclusive!r}")
    note = config.get("reverse_charge_note", REVERSE_CHARGE_NOTE)
    if not isinstance(note, str) or not note.strip():
        _refuse(f"{path}/reverse_charge_note", "the reverse charge note is a text")
    area = _reverse_charge(config.get("reverse_charge", []), f"{path}/reverse_charge")
    rates = _rates(config.get("rates", []), f"{path}/rates")
    return TaxConfig(inclusive, area, note, rates)


def _reverse_charge(value: Any, path: str) -> frozenset[str]:
    if value == "EU":
        return EU
    if not _is_list(value):
        _refuse(path, 'reverse_charge is a list of countries, or "EU"')
    for n, country in enumerate(value):
        _country(country, f"{path}/{n}")
        if not knows_format(country):
            _refuse(f"{path}/{n}", f"no VAT number format is known for {country}")
        if country in value[:n]:
            _refuse(f"{path}/{n}", f"{country} is listed twice")
    return frozenset(value)


def _rates(value: Any, path: str) -> tuple[TaxRate, ...]:
    if not _is_list(value):
        _refuse(path, "rates is a list of {country, region, rate, name}")
    rates: dict[tuple[str, str | None], TaxRate] = {}
    for n, entry in enumerate(value):
        here = f"{path}/{n}"
        if not isinstance(entry, Mapping):
            _refuse(here, "a rate is a mapping: {country, region, rate, name}")
        for key in entry:
            if key not in ("country", "region", "rate", "name"):
                _refuse(f"{here}/{key}", f"a rate has no field {key!r}")
        for key in ("country", "rate", "name"):
            if key not in entry:
                _refuse(f"{here}/{key}", f"a rate needs {key}")
        country = _country(entry["country"], f"{here}/country")
        region = entry.get("region")
        if region is not None and not (isinstance(region, str) and REGION.match(region)):
            _refuse(f"{here}/region", f"a region is a subdivision code such as CA, not {region!r}")
        name = entry["name"]
        if not isinstance(name, str) or not name.strip():
            _refuse(f"{here}/name", "a rate has a name, such as VAT")
        if (country, region) in rates:
            where = f"{country}-{region}" if region else country
            _refuse(here, f"{where} has a rate already")
        rates[(country, region)] = TaxRate(
            country, region, _percent(entry["rate"], f"{here}/rate"), name
        )
    return tuple(rates.values())


def _percent(value: Any, path: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        _refuse(path, f'a rate is a decimal string such as "19", not {value!r}')
    if isinstance(value, float):
        value = repr(value) if math.isfinite(value) else "NaN"
    try:
        rate = Decimal(value)
    except InvalidOperation:
        _refuse(path, f'a rate is a decimal string such as "19", not {value!r}')
    if not rate.is_finite() or not 0 <= rate <= 100:
        _refuse(path, f"a rate is a percentage from 0 to 100, not {value}")
    return rate


def _country(value: Any, path: str) -> str:
    if not isinstance(value, str) or not COUNTRY.match(value):
        _refuse(path, f"a country is an ISO 3166-1 alpha-2 code such as DE, not {value!r}")
    return value


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str)


def _half_up(value: Fraction) -> int:
    whole, rest = divmod(abs(value.numerator), value.denominator)
    if 2 * rest >= value.denominator:
        whole += 1
    return whole if value >= 0 else -whole


def _refuse(path: str, message: str) -> NoReturn:
    raise TaxConfigError(f"{path}: {message}", errors=[FieldError(message, pointer=path)])


def _refuse_spec(spec: str, message: str) -> NoReturn:
    """The `tax_provider` key of the invoicing file (docs/invoices.md) names nothing usable."""
    raise TaxConfigError(
        f"#/tax_provider: {message}", errors=[FieldError(message, pointer="#/tax_provider")]
    )
