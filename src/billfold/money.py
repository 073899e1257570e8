"""Money, for code outside Billfold too: ISO 4217 minor units and the one rounding.

`minor_units("USD") == 2`; `round_money(Decimal("10.005"), "USD") == Decimal("10.01")`.
Amounts are `Decimal`s in major units until they are rounded, once, half up, to the
currency's minor units (docs/pricing.md, decision 0032). The implementation lives in
`billfold.kit.money`, where the domain packages use it.
"""

from billfold.kit.money import Money, UnknownCurrency, minor_units, round_money, to_minor

__all__ = ["Money", "UnknownCurrency", "minor_units", "round_money", "to_minor"]
