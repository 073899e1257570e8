"""Tax ids checked by their format: the VAT numbers of the EU's member states.

A format check is not a lookup. It tells a typo from a VAT number, not a registered
business from an invented one: confirming that a number is registered is a VIES query
(ec.europa.eu/taxation_customs/vies), which the built-in tax provider does not make. An
external tax service, plugged in through `TaxProvider`, can (docs/decisions/0034).
"""

from __future__ import annotations

import re
from typing import Final

# The part after the prefix, per country, as the VIES documentation lists them. The prefix
# is the country's ISO code, but for Greece, whose VAT numbers start with EL.
VAT_FORMATS: Final = {
    "AT": r"U\d{8}",
    "BE": r"[01]\d{9}",
    "BG": r"\d{9,10}",
    "CY": r"\d{8}[A-Z]",
    "CZ": r"\d{8,10}",
    "DE": r"\d{9}",
    "DK": r"\d{8}",
    "EE": r"\d{9}",
    "ES": r"[A-Z0-9]\d{7}[A-Z0-9]",
    "FI": r"\d{8}",
    "FR": r"[A-HJ-NP-Z0-9]{2}\d{9}",
    "GR": r"\d{9}",
    "HR": r"\d{11}",
    "HU": r"\d{8}",
    "IE": r"\d{7}[A-W][A-I]?|\d[A-Z+*]\d{5}[A-W]",
    "IT": r"\d{11}",
    "LT": r"\d{9}|\d{12}",
    "LU": r"\d{8}",
    "LV": r"\d{11}",
    "MT": r"\d{8}",
    "NL": r"\d{9}B\d{2}",
    "PL": r"\d{10}",
    "PT": r"\d{9}",
    "RO": r"[1-9]\d{1,9}",
    "SE": r"\d{10}01",
    "SI": r"\d{8}",
    "SK": r"\d{10}",
}
_PREFIXES: Final = {"GR": "EL"}
_COMPILED: Final = {country: re.compile(pattern) for country, pattern in VAT_FORMATS.items()}
_SEPARATORS: Final = re.compile(r"[\s.\-]")


def knows_format(country: str) -> bool:
    return country in _COMPILED


def valid_format(country: str, tax_id: str) -> bool:
    """Whether `tax_id` has the format of a VAT number of `country`, its prefix included
    (`DE123456789`, `EL123456789` for Greece). Spaces, dots and dashes are ignored, and
    case. False for a country whose format is not known."""
    pattern = _COMPILED.get(country)
    if pattern is None:
        return False
    compact = _SEPARATORS.sub("", tax_id).upper()
    prefix = _PREFIXES.get(country, country)
    return compact.startswith(prefix) and pattern.fullmatch(compact[len(prefix) :]) is not None
