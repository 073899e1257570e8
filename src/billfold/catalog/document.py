"""The plans file's shape: a pydantic model per section, and for each value the message a
user sees when it is wrong. `billfold.catalog.plansfile` reads a file with them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
)
from pydantic_core import PydanticCustomError

from billfold.catalog.meters import (
    EVENT_TYPE,
    MAX_FILTER_VALUES,
    MAX_GROUP_BY,
    PROPERTY,
    Aggregation,
    FilterValue,
)
from billfold.catalog.quotas import (
    CREDIT_UNIT,
    MAX_RATE_DIGITS,
    MAX_RATE_PLACES,
    Anchor,
    Enforcement,
    LimitKind,
    Rounding,
)
from billfold.kit.money import CURRENCY, UnknownCurrency, minor_units
from billfold.kit.periods import Reset

SUPPORTED_VERSION: Final = 1
MAX_TEXT_LENGTH: Final = 500  # descriptions; the tables hold 500 characters
MAX_NAME_LENGTH: Final = 200


def refuse(message: str) -> PydanticCustomError:
    return PydanticCustomError("plans_file", "{message}", {"message": message})


def _value(message: str, accept: Callable[[Any], bool]) -> PlainValidator:
    """A value that `accept`s as it is, or a problem saying `message`."""

    def validate(value: Any) -> Any:
        if not accept(value):
            raise refuse(message)
        return value

    return PlainValidator(validate)


def _choice(kind: type[StrEnum], *, unset: StrEnum | None = None) -> PlainValidator:
    """One of `kind`'s values; with `unset`, a null stands for it (the key's default)."""
    names = ", ".join(item.value for item in kind)

    def validate(value: Any) -> Any:
        if value is None and unset is not None:
            return unset
        if not isinstance(value, str) or value not in {item.value for item in kind}:
            raise refuse(f"expected one of {names}")
        return kind(value)

    return PlainValidator(validate)


def _text(limit: int) -> PlainValidator:
    return _value(
        f"expected text of at most {limit} characters",
        lambda v: isinstance(v, str) and len(v) <= limit,
    )


def _matches(pattern: Any) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and bool(pattern.match(v))


def _amount(value: Any) -> Decimal:
    """A price as an integer or a decimal string; never a float, which would round."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise refuse('expected minor units per million tokens, e.g. 250 or "7.5"')
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = Decimal(-1)
    if not amount.is_finite() or amount < 0:
        raise refuse('expected a non-negative amount, e.g. 250 or "7.5"')
    return amount


def _rate(value: Any) -> Decimal:
    """A rate per unit of usage: an integer or a decimal string, never a float; exact
    enough that usage times rate is computed without rounding."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise refuse('expected minor units per unit of usage, e.g. 2 or "0.015"')
    try:
        rate = Decimal(value)
    except InvalidOperation:
        rate = Decimal(-1)
    if not rate.is_finite() or rate < 0:
        raise refuse('expected a non-negative rate, e.g. 2 or "0.015"')
    exponent = rate.normalize().as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    if places > MAX_RATE_PLACES or len(rate.normalize().as_tuple().digits) > MAX_RATE_DIGITS:
        raise refuse(
            f"expected at most {MAX_RATE_PLACES} decimal places and {MAX_RATE_DIGITS} digits"
        )
    return rate


def _unit(value: Any) -> str:
    """A wallet's unit: an ISO 4217 code with minor units, or a credit unit."""
    if isinstance(value, str) and CREDIT_UNIT.match(value):
        return value
    if isinstance(value, str) and CURRENCY.match(value):
        try:
            minor_units(value)
        except UnknownCurrency:
            pass
        else:
            return value
    raise refuse("expected an ISO 4217 code (USD) or a credit unit (lowercase, e.g. credits)")


def _group_by(value: Any) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if (
        not isinstance(names, list)
        or len(names) > MAX_GROUP_BY
        or not all(isinstance(name, str) and PROPERTY.match(name) for name in names)
        or len(set(names)) != len(names)
    ):
        raise refuse(f"expected up to {MAX_GROUP_BY} distinct property names")
    return tuple(names)


def _condition(value: Any) -> tuple[FilterValue, ...]:
    """`{equals: gpt-4o}` or `{in: [gpt-4o, o3]}`."""
    if not isinstance(value, Mapping) or len(value) != 1:
        raise refuse("expected exactly one of equals or in")
    ((operator, operand),) = value.items()
    if operator == "equals":
        values = [operand]
    elif operator == "in" and isinstance(operand, list) and operand:
        values = operand
    else:
        raise refuse("expected {equals: value} or {in: [values]}")
    if len(values) > MAX_FILTER_VALUES or not all(isinstance(v, str | int | bool) for v in values):
        raise refuse(f"values are text, integers or true/false (at most {MAX_FILTER_VALUES})")
    return tuple(values)


def _mapping(message: str, *, empty: bool = True) -> BeforeValidator:
    """A mapping (not empty, unless `empty`), or a problem saying `message`; what it maps
    is validated by the annotation it stands before."""

    def validate(value: Any) -> Any:
        if not isinstance(value, Mapping) or (not empty and not value):
            raise refuse(message)
        return value

    return BeforeValidator(validate)


Bool = Annotated[bool, _value("expected true or false", lambda v: isinstance(v, bool))]
Description = Annotated[str, _text(MAX_TEXT_LENGTH)]
EventType = Annotated[str, _value("expected an event type, e.g. ai.tokens", _matches(EVENT_TYPE))]
Property = Annotated[str, _value("expected a property name, e.g. tokens", _matches(PROPERTY))]
PropertyName = Annotated[str, _value("expected a property name", _matches(PROPERTY))]
QuotaMeter = Annotated[
    str, _value("expected a meter declared under meters", lambda v: isinstance(v, str))
]
GaugeMeter = Annotated[
    str,
    _value("expected a count or sum meter declared under meters", lambda v: isinstance(v, str)),
]


class _Section(BaseModel):
    """One block of the file: unknown keys are refused, and nothing is coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MeterDef(_Section):
    event: EventType = Field(None, validate_default=True)
    aggregation: Annotated[Aggregation, _choice(Aggregation)] = Field(None, validate_default=True)
    property: Property | None = None
    filters: Annotated[
        dict[PropertyName, Annotated[tuple[FilterValue, ...], PlainValidator(_condition)]],
        _mapping("expected a mapping of property names to {equals: v} or {in: [..]}"),
    ] = Field(default_factory=dict)
    group_by: Annotated[tuple[str, ...], PlainValidator(_group_by)] = ()
    description: Description | None = None
    subtract: (
        Annotated[
            str,
            _value("expected another event type, e.g. space.deleted", _matches(EVENT_TYPE)),
        ]
        | None
    ) = None
    allow_negative: Bool = False  # a sum meter that takes negative values


class _FeatureBase(_Section):
    description: Description | None = None


class BooleanFeature(_FeatureBase):
    type: Literal["boolean"]


class LimitFeature(_FeatureBase):
    type: Literal["limit"]
    meter: GaugeMeter | None = None  # a count or sum meter that keeps the limit's count


class PatternFeature(_FeatureBase):
    type: Literal["pattern"]


WalletUnit = Annotated[str, PlainValidator(_unit)]
Rate = Annotated[Decimal, PlainValidator(_rate)]


class WalletDef(_Section):
    """`wallet: {unit: credits, rate: "0.5", rounding: up}`: a metered feature's overage
    is paid from the customer's wallet in `unit`, at `rate` minor units per unit of usage."""

    unit: WalletUnit = Field(None, validate_default=True)
    rate: Rate = Field(None, validate_default=True)
    rounding: Annotated[Rounding, _choice(Rounding, unset=Rounding.UP)] = Rounding.UP


class MeteredFeature(_FeatureBase):
    """A quota per reset period, drawn from by the usage its meter counts."""

    type: Literal["metered"]
    meter: QuotaMeter | None = None
    reset: Annotated[Reset, _choice(Reset, unset=Reset.MONTH)] = Reset.MONTH
    anchor: Annotated[Anchor, _choice(Anchor, unset=Anchor.CALENDAR)] = Anchor.CALENDAR
    limit: Annotated[LimitKind, _choice(LimitKind, unset=LimitKind.HARD)] = LimitKind.HARD
    overage: Bool = False
    enforcement: Annotated[Enforcement, _choice(Enforcement)] | None = None
    wallet: WalletDef | None = None


FeatureDef = Annotated[
    BooleanFeature | LimitFeature | PatternFeature | MeteredFeature, Field(discriminator="type")
]
FEATURE_KINDS: Final[dict[str, type[_FeatureBase]]] = {
    "boolean": BooleanFeature,
    "limit": LimitFeature,
    "pattern": PatternFeature,
    "metered": MeteredFeature,
}


class PlanDef(_Section):
    """A plan: its name, a value for each feature it gives, and its prices."""

    name: (
        Annotated[
            str,
            _value(
                f"expected text of at most {MAX_NAME_LENGTH} characters",
                lambda v: isinstance(v, str) and bool(v.strip()) and len(v) <= MAX_NAME_LENGTH,
            ),
        ]
        | None
    ) = None
    description: Description | None = None
    default: Bool = False
    # False: never offered (the 402 upgrade hint), only granted: a claim code, an admin.
    for_sale: Bool = True
    # Checked against each feature's type once the features are known.
    features: Annotated[
        dict[Any, Any], _mapping("expected a mapping of feature keys to values")
    ] = Field(default_factory=dict)
    # Checked by `billfold.catalog.prices.read_prices` once the meters are known.
    prices: Any = None


class ModelPrice(_Section):
    prompt: Annotated[Decimal, PlainValidator(_amount)]
    completion: Annotated[Decimal, PlainValidator(_amount)]
    credits: Rate | None = None  # minor units of `ai.credit_unit` per token


CreditUnit = Annotated[
    str, _value("expected a credit unit (lowercase, e.g. credits)", _matches(CREDIT_UNIT))
]


class AiDef(_Section):
    """`ai: {event: ai.tokens, currency: USD, models: {gpt-4o: {prompt: 250, ...}}}`:
    prices are minor units of the currency per million tokens."""

    event: EventType = "ai.tokens"
    currency: Annotated[str, _value("expected an ISO 4217 code, e.g. USD", _matches(CURRENCY))] = (
        "USD"
    )
    models: Annotated[dict[Any, Any], _mapping("expected a mapping of model names to prices")] = (
        Field(default_factory=dict)
    )
    credit_unit: CreditUnit = "credits"  # the unit of the models' `credits` rates


class PlansDocument(_Section):
    """The top of the file. Each section is a mapping whose items are checked one by one."""

    version: Annotated[
        int,
        _value(
            f"expected {SUPPORTED_VERSION}",
            lambda v: type(v) is int and v == SUPPORTED_VERSION,
        ),
    ] = Field(None, validate_default=True)
    meters: Annotated[
        dict[Any, Any], _mapping("expected a mapping of meter keys to definitions")
    ] = Field(default_factory=dict)
    features: Annotated[
        dict[Any, Any],
        _mapping("expected a mapping of feature keys to definitions", empty=False),
    ] = Field(None, validate_default=True)
    plans: Annotated[
        dict[Any, Any],
        _mapping("expected a mapping of plan keys to definitions", empty=False),
    ] = Field(None, validate_default=True)
    ai: Annotated[
        dict[Any, Any], _mapping("expected a mapping with event, currency and models")
    ] = Field(default_factory=dict)
    # Checked by `billfold.catalog.coupons.read_coupons`.
    coupons: Any = None
