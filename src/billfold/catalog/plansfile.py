"""Read and validate a plans file (YAML, or the same document as JSON). Every problem is
reported with its path, all of them at once, in the order the document lists them.

    version: 1
    meters:
      ai_tokens: {event: ai.tokens, aggregation: sum, property: tokens}
    features:
      spaces.max: {type: limit, description: Spaces a customer may create}
      ai.tokens:  {type: metered, meter: ai_tokens, reset: month}
    plans:
      free:
        name: Free
        default: true          # unknown customers get this plan's entitlements
        features: {spaces.max: 3, ai.tokens: 10000}

The shape of each section is a pydantic model (`MeterDef`, the `FeatureDef` union
discriminated by `type`, `PlanDef`, `AiDef`), validated item by item so that one bad
item never hides the problems of another. What ties items together (a feature's meter,
a plan's values for its features' types, one default plan) is checked afterwards, on
the items that are valid. The result is a `CatalogSpec` of the catalog's own types.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from billfold.catalog.ai import MODEL, AiSettings, Price
from billfold.catalog.features import (
    FEATURE_KEY,
    MAX_KEY_LENGTH,
    PLAN_KEY,
    Feature,
    FeatureType,
    FeatureValue,
    PlanDefinition,
    parse_value,
)
from billfold.catalog.meters import (
    EVENT_TYPE,
    MAX_FILTER_VALUES,
    MAX_GROUP_BY,
    METER_KEY,
    PROPERTY,
    Aggregation,
    FilterValue,
    Meter,
)
from billfold.catalog.quotas import Anchor, Enforcement, LimitKind, QuotaPolicy
from billfold.kit.money import CURRENCY
from billfold.kit.periods import Reset

SUPPORTED_VERSION: Final = 1
MAX_FILE_BYTES: Final = 1_048_576
MAX_TEXT_LENGTH: Final = 500  # descriptions; the tables hold 500 characters
MAX_NAME_LENGTH: Final = 200


class PlansFileError(Exception):
    """The plans file is not valid; `errors` lists every problem as `path: message`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class CatalogSpec:
    features: dict[str, Feature]
    plans: dict[str, PlanDefinition]
    meters: dict[str, Meter] = dataclasses.field(default_factory=dict)
    ai: AiSettings = dataclasses.field(default_factory=AiSettings)

    @property
    def default_plan(self) -> str | None:
        return next((key for key, plan in self.plans.items() if plan.default), None)


# --- values, each with the message a user sees when it is wrong ------------------------


def _refuse(message: str) -> PydanticCustomError:
    return PydanticCustomError("plans_file", "{message}", {"message": message})


def _value(message: str, accept: Callable[[Any], bool]) -> PlainValidator:
    """A value that `accept`s as it is, or a problem saying `message`."""

    def validate(value: Any) -> Any:
        if not accept(value):
            raise _refuse(message)
        return value

    return PlainValidator(validate)


def _choice(kind: type[StrEnum]) -> PlainValidator:
    names = ", ".join(item.value for item in kind)

    def validate(value: Any) -> Any:
        if not isinstance(value, str) or value not in {item.value for item in kind}:
            raise _refuse(f"expected one of {names}")
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
        raise _refuse('expected minor units per million tokens, e.g. 250 or "7.5"')
    try:
        amount = Decimal(value)
    except InvalidOperation:
        amount = Decimal(-1)
    if not amount.is_finite() or amount < 0:
        raise _refuse('expected a non-negative amount, e.g. 250 or "7.5"')
    return amount


def _group_by(value: Any) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else value
    if (
        not isinstance(names, list)
        or len(names) > MAX_GROUP_BY
        or not all(isinstance(name, str) and PROPERTY.match(name) for name in names)
        or len(set(names)) != len(names)
    ):
        raise _refuse(f"expected up to {MAX_GROUP_BY} distinct property names")
    return tuple(names)


def _condition(value: Any) -> tuple[FilterValue, ...]:
    """`{equals: gpt-4o}` or `{in: [gpt-4o, o3]}`."""
    if not isinstance(value, Mapping) or len(value) != 1:
        raise _refuse("expected exactly one of equals or in")
    ((operator, operand),) = value.items()
    if operator == "equals":
        values = [operand]
    elif operator == "in" and isinstance(operand, list) and operand:
        values = operand
    else:
        raise _refuse("expected {equals: value} or {in: [values]}")
    if len(values) > MAX_FILTER_VALUES or not all(isinstance(v, str | int | bool) for v in values):
        raise _refuse(f"values are text, integers or true/false (at most {MAX_FILTER_VALUES})")
    return tuple(values)


def _mapping(message: str, *, empty: bool = True) -> BeforeValidator:
    """A mapping (not empty, unless `empty`), or a problem saying `message`; what it maps
    is validated by the annotation it stands before."""

    def validate(value: Any) -> Any:
        if not isinstance(value, Mapping) or (not empty and not value):
            raise _refuse(message)
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


class _FeatureBase(_Section):
    description: Description | None = None


class BooleanFeature(_FeatureBase):
    type: Literal["boolean"]


class LimitFeature(_FeatureBase):
    type: Literal["limit"]
    meter: GaugeMeter | None = None  # a count or sum meter that keeps the limit's count


class PatternFeature(_FeatureBase):
    type: Literal["pattern"]


class MeteredFeature(_FeatureBase):
    """A quota per reset period, drawn from by the usage its meter counts."""

    type: Literal["metered"]
    meter: QuotaMeter | None = None
    reset: Annotated[Reset, _choice(Reset)] = Reset.MONTH
    anchor: Annotated[Anchor, _choice(Anchor)] = Anchor.CALENDAR
    limit: Annotated[LimitKind, _choice(LimitKind)] = LimitKind.HARD
    overage: Bool = False
    enforcement: Annotated[Enforcement, _choice(Enforcement)] | None = None


FeatureDef = Annotated[
    BooleanFeature | LimitFeature | PatternFeature | MeteredFeature, Field(discriminator="type")
]
_FEATURE_KINDS: Final[dict[str, type[_FeatureBase]]] = {
    "boolean": BooleanFeature,
    "limit": LimitFeature,
    "pattern": PatternFeature,
    "metered": MeteredFeature,
}


class PlanDef(_Section):
    """A plan: its name, and a value for each feature it gives. (Prices come here.)"""

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
    # Checked against each feature's type once the features are known.
    features: Annotated[
        dict[Any, Any], _mapping("expected a mapping of feature keys to values")
    ] = Field(default_factory=dict)


class ModelPrice(_Section):
    prompt: Annotated[Decimal, PlainValidator(_amount)]
    completion: Annotated[Decimal, PlainValidator(_amount)]


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


# --- reading -------------------------------------------------------------------------


def load(path: Path) -> CatalogSpec:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise PlansFileError([f"{path}: cannot read ({error.strerror})"]) from None
    if size > MAX_FILE_BYTES:
        raise PlansFileError([f"{path}: larger than {MAX_FILE_BYTES} bytes"])
    return parse(path.read_text(encoding="utf-8"))


class _Loader(yaml.SafeLoader):
    """A safe loader that notes duplicate mapping keys, to report them with the rest."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[str] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                self.duplicates.append(
                    f"line {mark.line + 1}, column {mark.column + 1}: duplicate key {key!r}"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


YAML_TYPES: Final = ("application/yaml", "application/x-yaml", "text/yaml")


def read(raw: bytes, media_type: str) -> CatalogSpec:
    """A plans document as the API receives it: YAML (`application/yaml`) or JSON."""
    if media_type in YAML_TYPES:
        return parse(raw.decode("utf-8", errors="replace"))
    try:
        document: Any = json.loads(raw or b"null")
    except json.JSONDecodeError as error:
        raise PlansFileError([f"line {error.lineno}, column {error.colno}: {error.msg}"]) from None
    return validate(document)


def parse(text: str) -> CatalogSpec:
    """A YAML plans file, checked in full: its duplicate keys and every other problem."""
    loader = _Loader(text)
    try:
        document = loader.get_single_data()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "file"
        problem = getattr(error, "problem", None) or str(error)
        raise PlansFileError([f"{where}: {problem}"]) from None
    finally:
        loader.dispose()
    return validate(document, problems=loader.duplicates)


def validate(document: Any, *, problems: list[str] | None = None) -> CatalogSpec:
    """A parsed plans document as a `CatalogSpec`, or `PlansFileError` with every
    problem, after `problems` already found (duplicate keys)."""
    if not isinstance(document, Mapping):
        message = "(top): expected a mapping with version, features and plans"
        raise PlansFileError([*(problems or []), message])
    found = _Problems(document)
    found.model(PlansDocument, document, ())  # the top's own keys, and each section's shape

    def section(name: str) -> Mapping[Any, Any]:
        raw = document.get(name)
        return raw if isinstance(raw, Mapping) else {}

    meters = _meters(section("meters"), found)
    ai = _ai(section("ai"), found)
    features = _features(section("features"), meters, found)
    plans = _plans(section("plans"), features, found)
    defaults = [key for key, plan in plans.items() if plan.default]
    if len(defaults) > 1:
        found.add(
            ("plans",), f"only one plan may be the default, found {', '.join(defaults)}", last=True
        )
    if problems or found:
        raise PlansFileError([*(problems or []), *found.messages()])
    return CatalogSpec(features=features, plans=plans, meters=meters, ai=ai)


def _key(
    found: _Problems, path: tuple[str, ...], key: Any, pattern: Any, message: str
) -> str | None:
    if isinstance(key, str) and pattern.match(key) and len(key) <= MAX_KEY_LENGTH:
        return key
    found.add((*path, str(key)), message)
    return None


def _meters(raw: Mapping[Any, Any], found: _Problems) -> dict[str, Meter]:
    meters: dict[str, Meter] = {}
    for key, body in raw.items():
        path = ("meters", str(key))
        message = "meter keys are lowercase words, digits and _, e.g. ai_tokens"
        if _key(found, ("meters",), key, METER_KEY, message) is None:
            continue
        if not isinstance(body, Mapping):
            found.add(path, "expected a mapping with event and aggregation")
            continue
        meter = found.model(MeterDef, body, path)
        if meter is None:
            continue
        before = len(found)
        aggregation = meter.aggregation
        if meter.property is not None and aggregation is Aggregation.COUNT:
            found.add((*path, "property"), "count reads no property; remove it")
        elif meter.property is None and aggregation.needs_property:
            found.add((*path, "property"), f"{aggregation} needs the property it reads")
        if meter.subtract is not None:
            if meter.subtract == meter.event:
                found.add((*path, "subtract"), "expected another event type, e.g. space.deleted")
            elif not aggregation.adds:
                found.add((*path, "subtract"), "only count and sum meters can subtract")
        if len(found) > before:
            continue
        meters[key] = Meter(
            key=key,
            event_type=meter.event,
            aggregation=aggregation,
            property=meter.property,
            filters=dict(meter.filters),
            group_by=meter.group_by,
            description=meter.description,
            subtract=meter.subtract,
        )
    return meters


def _ai(raw: Mapping[Any, Any], found: _Problems) -> AiSettings:
    ai = found.model(AiDef, raw, ("ai",))
    raw_models = raw.get("models", {})
    models: dict[str, Price] = {}
    for model, body in (raw_models if isinstance(raw_models, Mapping) else {}).items():
        path = ("ai", "models", str(model))
        if not isinstance(model, str) or not MODEL.match(model):
            found.add(path, "expected a model name")
            continue
        if not isinstance(body, Mapping) or set(body) != {"prompt", "completion"}:
            found.add(path, "expected {prompt: <minor units>, completion: <minor units>}")
            continue
        price = found.model(ModelPrice, body, path)
        if price is not None:
            models[model] = Price(price.prompt, price.completion)
    if ai is None:
        return AiSettings()
    return AiSettings(event=ai.event, currency=ai.currency, models=models)


M = TypeVar("M", bound=BaseModel)
_FEATURES: Final = TypeAdapter(FeatureDef)
_TYPES: Final = ", ".join(t.value for t in FeatureType)


def _features(
    raw: Mapping[Any, Any], meters: Mapping[str, Meter], found: _Problems
) -> dict[str, Feature]:
    features: dict[str, Feature] = {}
    for key, body in raw.items():
        path = ("features", str(key))
        message = "feature keys are dotted lowercase words, e.g. spaces.max"
        if _key(found, ("features",), key, FEATURE_KEY, message) is None:
            continue
        if not isinstance(body, Mapping):
            found.add(path, "expected a mapping with a type")
            continue
        kind = body.get("type")
        if not isinstance(kind, str) or kind not in _FEATURE_KINDS:
            found.add((*path, "type"), f"expected one of {_TYPES}")
            continue
        feature = found.adapted(_FEATURES, body, path)
        config = _feature_meter(body, path, meters, found)  # also when the rest is wrong
        if feature is None or config is None:
            continue
        if isinstance(feature, MeteredFeature):
            config = QuotaPolicy(
                meter=config["meter"],
                reset=feature.reset,
                anchor=feature.anchor,
                limit=feature.limit,
                overage=feature.overage,
                enforcement=feature.enforcement,
            ).as_json()
        features[key] = Feature(
            key=key,
            type=FeatureType(feature.type),
            description=feature.description,
            config=config,
        )
    return features


def _feature_meter(
    body: Mapping[Any, Any],
    path: tuple[str, ...],
    meters: Mapping[str, Meter],
    found: _Problems,
) -> dict[str, Any] | None:
    """The meter a feature reads, as its config (`{}` for none), or None when it names
    one it may not read: a metered feature draws on a sum or count meter that never
    subtracts, and a limit may keep its count in a count or sum meter."""
    kind, name = body.get("type"), body.get("meter")
    meter = meters.get(name) if isinstance(name, str) else None
    if kind == FeatureType.METERED:
        if meter is None:
            found.add((*path, "meter"), "expected a meter declared under meters")
            return None
        if meter.aggregation not in (Aggregation.SUM, Aggregation.COUNT) or meter.subtract:
            message = "a quota draws on a sum or count meter that never subtracts"
            found.add((*path, "meter"), message)
            return None
        return {"meter": meter.key}
    if kind == FeatureType.LIMIT and name is not None:
        if meter is None or not meter.aggregation.adds:
            message = "expected a count or sum meter declared under meters"
            found.add((*path, "meter"), message)
            return None
        return {"meter": meter.key}
    return {}


def _plans(
    raw: Mapping[Any, Any], features: Mapping[str, Feature], found: _Problems
) -> dict[str, PlanDefinition]:
    plans: dict[str, PlanDefinition] = {}
    for key, body in raw.items():
        path = ("plans", str(key))
        message = "plan keys are lowercase words, digits, - and _"
        if _key(found, ("plans",), key, PLAN_KEY, message) is None:
            continue
        if not isinstance(body, Mapping):
            found.add(path, "expected a mapping with name and features")
            continue
        plan = found.model(PlanDef, body, path)
        if plan is None:
            continue
        values: dict[str, FeatureValue] = {}
        for feature_key, raw_value in plan.features.items():
            value_path = (*path, "features", str(feature_key))
            feature = features.get(feature_key)
            if feature is None:
                found.add(value_path, "unknown feature (declare it under features)")
                continue
            parsed = parse_value(feature.type, raw_value)
            if isinstance(parsed, str):
                found.add(value_path, parsed)
                continue
            values[feature_key] = parsed
        plans[key] = PlanDefinition(
            key=key,
            name=(plan.name or key).strip(),
            description=plan.description,
            default=plan.default,
            features=values,
        )
    return plans


# --- problems, with their paths, in the document's order -------------------------------


class _Problems:
    """The problems found so far, each with its path into the document; they come out
    in the order the document lists what they are about."""

    def __init__(self, document: Any) -> None:
        self._found: list[tuple[tuple[str, ...], str, bool]] = []
        self._order = _positions(document)

    def __len__(self) -> int:
        return len(self._found)

    def __bool__(self) -> bool:
        return bool(self._found)

    def add(self, path: tuple[str, ...], message: str, *, last: bool = False) -> None:
        """A problem of `path`; with `last`, of the block as a whole, after its items."""
        if (path, message, last) not in self._found:  # two checks may find the same
            self._found.append((path, message, last))

    def model(self, model: type[M], body: Any, path: tuple[str, ...]) -> M | None:
        """`body` as a `model`, or None with its problems added."""
        try:
            return model.model_validate(body)
        except ValidationError as error:
            self._translate(error, path, model)
            return None

    def adapted(self, adapter: TypeAdapter[Any], body: Any, path: tuple[str, ...]) -> Any:
        try:
            return adapter.validate_python(body)
        except ValidationError as error:
            self._translate(error, path, None, tagged=True)
            return None

    def _translate(
        self,
        error: ValidationError,
        path: tuple[str, ...],
        model: type[BaseModel] | None,
        *,
        tagged: bool = False,
    ) -> None:
        for item in error.errors():
            loc = [str(part) for part in item["loc"] if part != "[key]"]
            if tagged and loc:  # a union member names itself first: `metered`, ...
                model = _FEATURE_KINDS.get(loc[0])
                loc = loc[1:]
            keys: tuple[str, ...] = _keys_of(model) if model else ()
            if item["type"] == "extra_forbidden":
                message = f"unknown key (expected one of {', '.join(keys)})"
            elif item["type"] == "missing":
                message = "required"
            else:
                message = str(item["msg"])
            self.add((*path, *loc), message)

    def messages(self) -> list[str]:
        def position(found: tuple[tuple[str, ...], str, bool]) -> tuple[int, int]:
            path, _message, last = found
            for depth in range(len(path), 0, -1):
                span = self._order.get(path[:depth])
                if span is not None:
                    return (span[1], 1) if last else (span[0], 0)
            return (0, 0)

        ordered = sorted(self._found, key=position)  # stable: ties keep the finding order
        return [f"{'.'.join(path) or '(top)'}: {message}" for path, message, _ in ordered]


def _keys_of(model: type[BaseModel]) -> tuple[str, ...]:
    """The keys a block takes, as a message names them: a feature's `type` first."""
    names = tuple(model.model_fields)
    return ("type", *(n for n in names if n != "type")) if "type" in names else names


def _positions(document: Any) -> dict[tuple[str, ...], tuple[int, int]]:
    """Every mapping key's path, with where it starts and ends in a walk of the document."""
    spans: dict[tuple[str, ...], tuple[int, int]] = {}
    step = 0

    def walk(node: Any, path: tuple[str, ...]) -> None:
        nonlocal step
        if isinstance(node, Mapping):
            for key, value in node.items():
                here = (*path, str(key))
                start = step = step + 1
                walk(value, here)
                step += 1
                spans[here] = (start, step)

    walk(document, ())
    return spans
