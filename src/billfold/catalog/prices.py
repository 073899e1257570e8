"""A plan version's prices: per currency and billing interval, a recurring fee billed in
advance, usage charges per meter billed in arrears, a minimum commitment per period and
trial days. The plans file writes them under each plan:

    pro:
      prices:
        - currency: USD
          interval: month          # day, week, month or year
          interval_count: 1        # every N intervals (default 1)
          recurring: {model: flat, amount: "29.00"}
          usage:
            ai_tokens: {model: graduated, tiers: [...]}
          minimum: "10.00"         # per period, optional
          trial_days: 14           # optional

Each price mapping is one that `billfold.pricing.rate` takes, kept as written (numbers as
decimal strings), so invoices, previews and the portal rate it with the one pricing module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from billfold.catalog.meters import Aggregation, Meter
from billfold.kit.errors import BillfoldError
from billfold.money import minor_units
from billfold.pricing import parse_price
from billfold.pricing.dates import INTERVALS
from billfold.pricing.models import amount

Found = list[tuple[tuple[str, ...], str]]  # each problem's path and message
MAX_TRIAL_DAYS: Final = 730
MAX_INTERVAL_COUNT: Final = 36  # every three years, at most
MAX_OPTIONS: Final = 50  # prices per plan version
OPTION_KEYS: Final = (
    "currency",
    "interval",
    "interval_count",
    "recurring",
    "usage",
    "minimum",
    "trial_days",
)
# A recurring fee is charged on the subscription's quantity (seats, say); the percentage
# models charge a share of amounts, which a recurring fee has none of.
RECURRING_MODELS: Final = ("flat", "per_unit", "graduated", "volume", "package")


@dataclass(frozen=True)
class PlanPrice:
    """One way to pay for a plan version: a currency and a billing interval."""

    currency: str
    interval: str
    interval_count: int = 1
    recurring: Mapping[str, Any] | None = None  # a price mapping, rated on the quantity
    usage: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # meter -> price
    minimum: Decimal | None = None  # major units per period
    trial_days: int = 0

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.currency, self.interval, self.interval_count)

    def describe(self) -> str:
        every = (
            self.interval if self.interval_count == 1 else f"{self.interval_count} {self.interval}s"
        )
        return f"{self.currency} every {every}"

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "currency": self.currency,
            "interval": self.interval,
            "interval_count": self.interval_count,
        }
        if self.recurring is not None:
            body["recurring"] = dict(self.recurring)
        if self.usage:
            body["usage"] = {meter: dict(price) for meter, price in sorted(self.usage.items())}
        if self.minimum is not None:
            body["minimum"] = str(self.minimum)
        if self.trial_days:
            body["trial_days"] = self.trial_days
        return body

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PlanPrice:
        minimum = raw.get("minimum")
        return cls(
            currency=raw["currency"],
            interval=raw["interval"],
            interval_count=raw.get("interval_count", 1),
            recurring=raw.get("recurring"),
            usage=raw.get("usage") or {},
            minimum=Decimal(minimum) if minimum is not None else None,
            trial_days=raw.get("trial_days", 0),
        )


def read_prices(
    raw: Any, meters: Mapping[str, Meter], path: tuple[str, ...]
) -> tuple[tuple[PlanPrice, ...], Found]:
    """A plan's `prices:` list read into `PlanPrice`s, and every problem with its path.
    Two prices for one currency and interval are refused: a subscription picks one by
    those."""
    if not isinstance(raw, list):
        return (), [(path, "expected a list of prices, one per currency and interval")]
    if len(raw) > MAX_OPTIONS:
        return (), [(path, f"at most {MAX_OPTIONS} prices per plan")]
    prices: list[PlanPrice] = []
    problems: Found = []
    seen: dict[tuple[str, str, int], int] = {}
    for index, body in enumerate(raw):
        here = (*path, str(index))
        found, price = _option(body, meters, here)
        problems.extend(found)
        if price is None:
            continue
        if price.key in seen:
            message = f"a second price in {price.describe()} (the first is item {seen[price.key]})"
            problems.append((here, message))
            continue
        seen[price.key] = index
        prices.append(price)
    return tuple(prices), problems


def _option(
    body: Any, meters: Mapping[str, Meter], path: tuple[str, ...]
) -> tuple[Found, PlanPrice | None]:
    if not isinstance(body, Mapping):
        return [(path, "expected a mapping with currency, interval and recurring or usage")], None
    problems: Found = []
    for name in body:
        if name not in OPTION_KEYS:
            problems.append(
                ((*path, str(name)), f"unknown key (expected one of {', '.join(OPTION_KEYS)})")
            )
    currency = body.get("currency")
    if not isinstance(currency, str):
        problems.append(((*path, "currency"), "required: an ISO 4217 code, e.g. USD"))
    else:
        try:
            minor_units(currency)
        except BillfoldError:
            problems.append(((*path, "currency"), f"{currency!r} is not an ISO 4217 currency"))
    interval = body.get("interval")
    if interval not in INTERVALS:
        problems.append(((*path, "interval"), f"expected one of {', '.join(INTERVALS)}"))
    interval_count = body.get("interval_count", 1)
    if type(interval_count) is not int or not 1 <= interval_count <= MAX_INTERVAL_COUNT:
        message = f"expected a whole number from 1 to {MAX_INTERVAL_COUNT}"
        problems.append(((*path, "interval_count"), message))
    trial_days = body.get("trial_days", 0)
    if type(trial_days) is not int or not 0 <= trial_days <= MAX_TRIAL_DAYS:
        message = f"expected a whole number of days from 0 to {MAX_TRIAL_DAYS}"
        problems.append(((*path, "trial_days"), message))
    minimum = None
    if body.get("minimum") is not None:
        minimum = _checked(lambda: amount(body["minimum"], "#"), (*path, "minimum"), problems)
    recurring = body.get("recurring")
    if recurring is not None:
        recurring = _price(recurring, (*path, "recurring"), problems)
        if recurring is not None and recurring["model"] not in RECURRING_MODELS:
            message = f"a recurring fee is one of {', '.join(RECURRING_MODELS)}"
            problems.append(((*path, "recurring", "model"), message))
    usage: dict[str, Mapping[str, Any]] = {}
    raw_usage = body.get("usage", {})
    if not isinstance(raw_usage, Mapping):
        problems.append(((*path, "usage"), "expected a mapping of meter keys to prices"))
        raw_usage = {}
    for meter_key, raw_price in raw_usage.items():
        here = (*path, "usage", str(meter_key))
        meter = meters.get(meter_key) if isinstance(meter_key, str) else None
        if meter is None:
            problems.append((here, "expected a meter declared under meters"))
            continue
        price = _price(raw_price, here, problems)
        if price is None:
            continue
        if price["model"] == "percentage" and meter.aggregation is not Aggregation.SUM:
            message = "a percentage price takes each event's amount: a sum meter"
            problems.append(((*here, "model"), message))
            continue
        usage[meter_key] = price
    if body.get("recurring") is None and not raw_usage:
        problems.append((path, "a price charges a recurring fee, usage, or both"))
    if problems:
        return problems, None
    assert isinstance(currency, str)
    assert isinstance(interval, str)
    option = PlanPrice(
        currency=currency,
        interval=interval,
        interval_count=interval_count,
        recurring=recurring,
        usage=usage,
        minimum=minimum,
        trial_days=trial_days,
    )
    return [], option


def _price(raw: Any, path: tuple[str, ...], problems: Found) -> dict[str, Any] | None:
    """`raw` checked by `billfold.pricing.parse_price`, kept as written, numbers as
    decimal strings; None with the problem (and its path) added."""
    result = _checked(lambda: (parse_price(raw), _as_written(raw))[1], path, problems)
    return result if isinstance(result, dict) else None


def _checked(read: Callable[[], Any], path: tuple[str, ...], problems: Found) -> Any:
    try:
        return read()
    except BillfoldError as error:
        for fault in error.errors or ():
            pointer = (fault.pointer or "#").removeprefix("#").strip("/")
            problems.append(((*path, *(p for p in pointer.split("/") if p)), fault.detail))
        return None


def _as_written(value: Any) -> Any:
    """A price mapping as stored: numbers become their decimal strings (`29` -> `"29"`,
    `0.5` -> `"0.5"`), so a stored price never holds a float."""
    if isinstance(value, Mapping):
        return {str(k): _as_written(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_written(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return str(Decimal(repr(value)))
    return str(value)
