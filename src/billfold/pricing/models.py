"""Pricing models: a price mapping read into a checked `Price`, and what it charges.

Amounts are decimal strings in major units; a number that JSON or YAML wrote is taken as
its shortest decimal form. Every refusal names the path of the offending value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, Final, NoReturn

from billfold.kit.errors import FieldError, InvalidInput

MODELS: Final = (
    "flat",
    "per_unit",
    "graduated",
    "volume",
    "package",
    "percentage",
    "graduated_percentage",
)


# A quantity, or the ordered amounts of the events (the `percentage` model).
Usage = Decimal | int | Sequence[Decimal | int]


class PriceError(InvalidInput):
    code = "invalid_price"
    title = "The price is not valid"


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # cumulative and inclusive; None: the open last tier
    unit: Decimal  # unit_amount, or for graduated_percentage the rate in percent
    flat: Decimal


@dataclass(frozen=True)
class Price:
    model: str
    fields: Mapping[str, Decimal]
    tiers: tuple[Tier, ...] = ()
    rounding: str = "up"

    def field(self, name: str) -> Decimal:
        return self.fields.get(name, Decimal(0))


def rate(price: Mapping[str, Any] | Price, usage: Usage) -> Decimal:
    """What `price` charges for `usage`, exact and unrounded, in major units.

    `usage` is a quantity; for `percentage` it is the ordered list of event amounts (a
    quantity is taken as one event), and for `graduated_percentage` a total amount or the
    list to add up."""
    checked = price if isinstance(price, Price) else parse_price(price)
    return _RATERS[checked.model](checked, usage)


def parse_price(price: Mapping[str, Any], *, path: str = "#") -> Price:
    """`price` checked: a known model, its fields present and non-negative, tiers in
    order; `PriceError` with the path of the first fault otherwise."""
    if not isinstance(price, Mapping):
        _refuse(path, "a price is a mapping with a `model`")
    model = price.get("model")
    if not isinstance(model, str) or model not in MODELS:
        _refuse(f"{path}/model", f"the model is one of {', '.join(MODELS)}, not {model!r}")
    assert isinstance(model, str)
    required, optional = _FIELDS[model]
    allowed = {"model", *required, *optional, *(("tiers",) if model in _TIERED else ())}
    if model == "package":
        allowed.add("rounding")
    for name in price:
        if name not in allowed:
            _refuse(f"{path}/{name}", f"a {model} price has no field {name!r}")
    fields = {}
    for name in (*required, *optional):
        if name in price:
            fields[name] = amount(price[name], f"{path}/{name}")
        elif name in required:
            _refuse(f"{path}/{name}", f"a {model} price needs {name}")
    tiers: tuple[Tier, ...] = ()
    if model in _TIERED:
        tiers = _tiers(price.get("tiers"), f"{path}/tiers", model)
    rounding = price.get("rounding", "up")
    if rounding not in ("up", "down"):
        _refuse(f"{path}/rounding", f"rounding is up or down, not {rounding!r}")
    checked = Price(model, fields, tiers, rounding)
    _check(checked, path)
    return checked


def amount(value: Any, path: str) -> Decimal:
    """A non-negative decimal from a plans file: a decimal string, or a number."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        _refuse(path, f'a decimal string such as "29.00", not {value!r}')
    if isinstance(value, float):
        if not math.isfinite(value):
            _refuse(path, "a finite amount")
        value = repr(value)
    try:
        parsed = Decimal(value)
    except InvalidOperation:
        _refuse(path, f'a decimal string such as "29.00", not {value!r}')
    if not parsed.is_finite():
        _refuse(path, "a finite amount")
    if parsed < 0:
        _refuse(path, f"an amount is never negative ({value})")
    return parsed


def _tiers(value: Any, path: str, model: str) -> tuple[Tier, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str) or not value:
        _refuse(path, "tiers are a non-empty list")
    unit_name = "rate" if model == "graduated_percentage" else "unit_amount"
    tiers = []
    previous: Decimal | None = Decimal(0)
    for n, tier in enumerate(value):
        here = f"{path}/{n}"
        if not isinstance(tier, Mapping):
            _refuse(here, "a tier is a mapping: {up_to, " + unit_name + ", flat_amount}")
        for name in tier:
            if name not in ("up_to", unit_name, "flat_amount"):
                _refuse(f"{here}/{name}", f"a tier has no field {name!r}")
        if "up_to" not in tier:
            _refuse(f"{here}/up_to", "a tier needs up_to (null for the open last tier)")
        up_to = None if tier["up_to"] is None else amount(tier["up_to"], f"{here}/up_to")
        if previous is None:
            _refuse(here, "only the last tier may be open (up_to: null)")
        elif up_to is not None and up_to <= previous:
            _refuse(f"{here}/up_to", f"tiers go up: {up_to} is not above {previous}")
        unit = amount(tier.get(unit_name, 0), f"{here}/{unit_name}")
        flat = amount(tier.get("flat_amount", 0), f"{here}/flat_amount")
        tiers.append(Tier(up_to, unit, flat))
        previous = up_to
    if previous is not None:
        _refuse(f"{path}/{len(tiers) - 1}/up_to", "the last tier is open: up_to: null")
    return tuple(tiers)


def _check(price: Price, path: str) -> None:
    """What holds across fields: a package has a size; per-event bounds are in order; a
    volume price never charges less for more."""
    if price.model == "package" and price.field("package_size") <= 0:
        _refuse(f"{path}/package_size", "a package holds at least some units")
    if price.model == "percentage" and price.fields.get("max_per_event", Decimal("Infinity")) < (
        price.field("min_per_event")
    ):
        _refuse(f"{path}/max_per_event", "max_per_event is at least min_per_event")
    if price.model == "percentage" and price.field("free_events") % 1:
        _refuse(f"{path}/free_events", "free_events is a whole number of events")
    if price.model == "percentage" and price.field("rate") > 100:
        _refuse(f"{path}/rate", "a rate is a percentage, at most 100")
    if price.model == "graduated_percentage":
        for n, tier in enumerate(price.tiers):
            if tier.unit > 100:
                _refuse(f"{path}/tiers/{n}/rate", "a rate is a percentage, at most 100")
    if price.model == "volume":
        for n in range(1, len(price.tiers)):
            before, after = price.tiers[n - 1], price.tiers[n]
            assert before.up_to is not None
            edge = before.up_to
            if edge * after.unit + after.flat < edge * before.unit + before.flat:
                _refuse(
                    f"{path}/tiers/{n}",
                    f"past {edge} units this tier would charge less than {edge} units cost "
                    "in the tier before: a volume price never charges less for more",
                )


def _refuse(path: str, reason: str) -> NoReturn:
    raise PriceError(f"{path}: {reason}", errors=[FieldError(reason, pointer=path)])


def _quantity(usage: Usage) -> Decimal:
    if isinstance(usage, Sequence):
        return sum((Decimal(item) for item in usage), Decimal(0))
    return Decimal(usage)


def _events(usage: Usage) -> list[Decimal]:
    if isinstance(usage, Sequence):
        return [Decimal(item) for item in usage]
    return [Decimal(usage)]


def _flat(price: Price, _usage: Any) -> Decimal:
    return price.field("amount")


def _per_unit(price: Price, usage: Any) -> Decimal:
    return price.field("unit_amount") * _quantity(usage)


def _graduated(price: Price, usage: Any) -> Decimal:
    """Each tier charges the units that fall in it, plus its flat amount once at least
    one unit does."""
    quantity, total, below = _quantity(usage), Decimal(0), Decimal(0)
    for tier in price.tiers:
        if quantity <= below:
            break
        top = quantity if tier.up_to is None else min(quantity, tier.up_to)
        total += (top - below) * tier.unit + tier.flat
        below = top if tier.up_to is None else tier.up_to
    return total


def _volume(price: Price, usage: Any) -> Decimal:
    """Every unit at the rate of the one tier the whole quantity falls in."""
    quantity = _quantity(usage)
    if quantity <= 0:
        return Decimal(0)
    for tier in price.tiers:
        if tier.up_to is None or quantity <= tier.up_to:
            return quantity * tier.unit + tier.flat
    raise AssertionError("the last tier is open")  # parse_price guarantees it


def _package(price: Price, usage: Any) -> Decimal:
    billable = max(_quantity(usage) - price.field("free_units"), Decimal(0))
    mode = ROUND_CEILING if price.rounding == "up" else ROUND_FLOOR
    packages = (billable / price.field("package_size")).to_integral_value(rounding=mode)
    return packages * price.field("package_amount")


def _percentage(price: Price, usage: Any) -> Decimal:
    """Per event, in order: nothing while the free allowance lasts (the first
    `free_events` events and the first `free_amount` of the amounts; with both, until
    either runs out), then `rate` percent of the amount plus `fixed_amount`, kept within
    `min_per_event` and `max_per_event`."""
    percent = price.field("rate") / 100
    fixed = price.field("fixed_amount")
    free_events = price.fields.get("free_events")
    unused = price.fields.get("free_amount")  # of the free amount, what is left
    has_allowance = free_events is not None or unused is not None
    low = price.fields.get("min_per_event")
    high = price.fields.get("max_per_event")
    total = Decimal(0)
    for n, event in enumerate(_events(usage)):
        charged = event
        if (
            has_allowance
            and (free_events is None or n < free_events)
            and (unused is None or unused > 0)
        ):
            if unused is None:
                continue  # one of the free events
            charged = max(event - unused, Decimal(0))
            unused -= event - charged
            if charged == 0:
                continue
        fee = charged * percent + fixed
        if low is not None:
            fee = max(fee, low)
        if high is not None:
            fee = min(fee, high)
        total += fee
    return total


def _graduated_percentage(price: Price, usage: Any) -> Decimal:
    """The graduated model on a total amount, each tier at its rate in percent."""
    percent = Price(
        "graduated",
        {},
        tuple(Tier(tier.up_to, tier.unit / 100, tier.flat) for tier in price.tiers),
    )
    return _graduated(percent, usage)


_FIELDS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "flat": (("amount",), ()),
    "per_unit": (("unit_amount",), ()),
    "graduated": ((), ()),
    "volume": ((), ()),
    "package": (("package_size", "package_amount"), ("free_units",)),
    "percentage": (
        ("rate",),
        ("fixed_amount", "free_events", "free_amount", "min_per_event", "max_per_event"),
    ),
    "graduated_percentage": ((), ()),
}
_TIERED: Final = frozenset({"graduated", "volume", "graduated_percentage"})
_RATERS: Final[dict[str, Callable[[Price, Any], Decimal]]] = {
    "flat": _flat,
    "per_unit": _per_unit,
    "graduated": _graduated,
    "volume": _volume,
    "package": _package,
    "percentage": _percentage,
    "graduated_percentage": _graduated_percentage,
}
