"""Invoicing's collaborators, wired at the edge: who sells (the seller on every invoice),
in which locale documents are written, and the tax provider.

They come from an invoicing file (`BILLFOLD_INVOICING_FILE`, YAML), read once at
start-up and refused with the path of the first fault:

    seller:
      name: Example GmbH
      address: [Hauptstr. 1, 10115 Berlin]
      country: DE
      tax_id: DE123456789
      email: billing@example.com
    locale: de_DE                 # default en_US
    tax_provider: builtin         # or package.module:factory
    taxes:                        # the provider's configuration (docs/invoices.md)
      inclusive: false
      reverse_charge: EU
      rates:
        - {country: DE, rate: "19", name: VAT}

Without a file, the seller is the tenant (by its name) and no tax applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, NoReturn

import yaml

from billfold.invoicing.document import COUNTRY, REGION, Party
from billfold.invoicing.formatting import locale as known_locale
from billfold.invoicing.records import Invoicing
from billfold.invoicing.taxes import TaxConfigError, load_provider, parse_tax_config
from billfold.kit.errors import FieldError
from billfold.settings import Settings

MAX_FILE_BYTES: Final = 65_536
SELLER_KEYS: Final = ("name", "address", "country", "region", "tax_id", "email")


def wire(settings: Settings) -> Invoicing:
    return load(settings.invoicing_file)


def load(path: str | Path | None) -> Invoicing:
    """The invoicing file at `path` (none: the defaults); `TaxConfigError` naming the
    path of the first fault."""
    if not path:
        return Invoicing()
    file = Path(path)
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            _refuse("#", f"{file} is larger than {MAX_FILE_BYTES} bytes")
        document = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as error:
        _refuse("#", f"cannot read {file}: {error.strerror}")
    except yaml.YAMLError as error:
        _refuse("#", f"{file} is not YAML: {error}")
    return parse(document)


def parse(document: Any) -> Invoicing:
    if document is None:
        return Invoicing()
    if not isinstance(document, Mapping):
        _refuse("#", "expected a mapping with seller, locale, tax_provider and taxes")
    for key in document:
        if key not in ("seller", "locale", "tax_provider", "taxes"):
            _refuse(f"#/{key}", "unknown key (expected seller, locale, tax_provider, taxes)")
    seller = _seller(document["seller"]) if document.get("seller") is not None else None
    where = document.get("locale", "en_US")
    if not isinstance(where, str):
        _refuse("#/locale", "expected a locale such as en_US or de_DE")
    known_locale(where)  # UnknownLocale for a locale babel does not know
    config = parse_tax_config(document.get("taxes") or {}, path="#/taxes")
    spec = document.get("tax_provider", "builtin")
    if not isinstance(spec, str):
        _refuse("#/tax_provider", 'expected "builtin" or "package.module:factory"')
    return Invoicing(seller=seller, locale=where, taxes=load_provider(spec, config))


def _seller(raw: Any) -> Party:
    if not isinstance(raw, Mapping):
        _refuse("#/seller", "expected a mapping with name, address, country, ...")
    for key in raw:
        if key not in SELLER_KEYS:
            _refuse(f"#/seller/{key}", f"unknown key (expected one of {', '.join(SELLER_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        _refuse("#/seller/name", "required: the name invoices are issued in")
    address = raw.get("address", [])
    if not isinstance(address, list) or not all(isinstance(line, str) for line in address):
        _refuse("#/seller/address", "expected a list of lines")
    country = raw.get("country")
    if country is not None and (not isinstance(country, str) or not COUNTRY.match(country)):
        _refuse("#/seller/country", "expected an ISO 3166-1 alpha-2 code, e.g. DE")
    region = raw.get("region")
    if region is not None and (not isinstance(region, str) or not REGION.match(region)):
        _refuse("#/seller/region", "expected the subdivision part of ISO 3166-2, e.g. CA")
    for key in ("tax_id", "email"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            _refuse(f"#/seller/{key}", "expected text")
    return Party(
        name=name.strip(),
        address=tuple(address),
        country=country,
        region=region,
        tax_id=raw.get("tax_id"),
        email=raw.get("email"),
    )


def _refuse(pointer: str, message: str) -> NoReturn:
    raise TaxConfigError(f"{pointer}: {message}", errors=[FieldError(message, pointer=pointer)])
