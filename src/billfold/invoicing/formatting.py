"""Money, quantities, rates and dates written for a locale, with babel (CLDR).

Money is shown in the currency's ISO 4217 minor units, never CLDR's: babel's own digits
differ for some currencies (IQD: CLDR 0, ISO 3), and letting it quantize would show an
amount other than the one owed. The amount is already rounded (an invoice line rounds
once); here it is only written.
"""

from __future__ import annotations

import copy
import functools
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_interval
from babel.numbers import NumberPattern, format_decimal, format_percent

from billfold.kit.errors import FieldError, InvalidInput
from billfold.kit.money import minor_units

_ONE_TICK = timedelta(microseconds=1)


class UnknownLocale(InvalidInput):
    code = "unknown_locale"
    title = "Not a locale Billfold can write documents in"


@functools.cache
def locale(identifier: str) -> Locale:
    """The CLDR locale `identifier` names (`de_DE`, `ja_JP`); `UnknownLocale` otherwise."""
    try:
        return Locale.parse(identifier)
    except (UnknownLocaleError, ValueError, TypeError) as error:
        message = f"{identifier!r} is not a known locale such as en_US or de_DE"
        raise UnknownLocale(message, errors=[FieldError(message, pointer="#/locale")]) from error


def money(amount_minor: int, currency: str, where: Locale) -> str:
    """`amount_minor` of `currency` as `where` writes money, with exactly the ISO 4217
    minor units: `money(123456, "EUR", de_DE) == "1.234,56 €"`, `money(1234567, "IQD",
    en_US) == "IQD1,234.567"` (babel alone would write IQD1,235)."""
    digits = minor_units(currency)
    amount = Decimal(amount_minor).scaleb(-digits)  # exact: an integer moved by a power of 10
    pattern: NumberPattern = copy.copy(where.currency_formats["standard"])
    pattern.frac_prec = (digits, digits)  # ISO's digits: the amount has exactly these
    written = pattern.apply(amount, where, currency=currency, currency_digits=False)
    return str(written)  # babel's apply() has no return annotation


def quantity(value: Decimal, where: Locale) -> str:
    """Every digit of `value`, grouped and pointed as `where` writes numbers."""
    return format_decimal(value.normalize(), locale=where, decimal_quantization=False)


def rate(percent: Decimal, where: Locale) -> str:
    """A tax rate in percent (`Decimal("7.25")`) as `where` writes it: "7.25%", "19 %"."""
    return format_percent(percent.scaleb(-2), locale=where, decimal_quantization=False)


def day(moment: datetime, where: Locale) -> str:
    """The UTC date of `moment`, as `where` writes a date."""
    return format_date(_utc_date(moment), format="medium", locale=where)


def period(start: datetime, end: datetime, where: Locale) -> str:
    """The days `[start, end)` covers, first and last: a month that ends at midnight on
    Feb 1 shows Jan 1 and Jan 31. Days are UTC dates, as in billfold.pricing."""
    first, last = _utc_date(start), _utc_date(end - _ONE_TICK)
    if first == last:
        return format_date(first, format="medium", locale=where)
    return format_interval(first, last, skeleton="yMMMd", locale=where)


def country(code: str, where: Locale) -> str:
    """The country's name in the locale's language; the code where CLDR has no name."""
    name = where.territories.get(code)
    return name if isinstance(name, str) else code


def _utc_date(moment: datetime) -> date:
    return moment.astimezone(UTC).date()
