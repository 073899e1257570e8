"""Read and validate a plans file (YAML). Every error comes with its path.

version: 1
features:
  spaces.max: {type: limit, description: Spaces a customer may create}
  plugins:    {type: pattern}
plans:
  free:
    name: Free
    default: true          # unknown customers get this plan's entitlements
    features: {spaces.max: 3, plugins: ["basic_*"]}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from billfold.catalog import ai
from billfold.catalog.ai import AiSettings
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

SUPPORTED_VERSION = 1
MAX_FILE_BYTES = 1_048_576
_TOP_KEYS = ("version", "meters", "features", "plans", "ai")
_METER_KEYS = (
    "event",
    "aggregation",
    "property",
    "filters",
    "group_by",
    "description",
    "subtract",
)
_AGGREGATIONS = ", ".join(a.value for a in Aggregation)
_FEATURE_KEYS = ("type", "description")
_QUOTA_KEYS = ("meter", "reset", "anchor", "limit", "overage", "enforcement")
_PLAN_KEYS = ("name", "description", "default", "features")
_TYPES = ", ".join(t.value for t in FeatureType)


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses duplicate mapping keys instead of keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load(path: Path) -> CatalogSpec:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise PlansFileError([f"{path}: cannot read ({error.strerror})"]) from None
    if size > MAX_FILE_BYTES:
        raise PlansFileError([f"{path}: larger than {MAX_FILE_BYTES} bytes"])
    return parse(path.read_text(encoding="utf-8"))


def parse(text: str) -> CatalogSpec:
    try:
        document = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "file"
        problem = getattr(error, "problem", None) or str(error)
        raise PlansFileError([f"{where}: {problem}"]) from None
    return validate(document)


def validate(document: Any) -> CatalogSpec:
    errors: list[str] = []
    if not isinstance(document, Mapping):
        raise PlansFileError(["(top): expected a mapping with version, features and plans"])
    for key in document:
        if key not in _TOP_KEYS:
            errors.append(f"{key}: unknown key (expected one of {', '.join(_TOP_KEYS)})")
    if document.get("version") != SUPPORTED_VERSION:
        errors.append(f"version: expected {SUPPORTED_VERSION}")
    meters = _meters(document.get("meters", {}), errors)
    ai = _ai(document.get("ai", {}), errors)
    features = _features(document.get("features"), meters, errors)
    plans = _plans(document.get("plans"), features, errors)
    defaults = [key for key, plan in plans.items() if plan.default]
    if len(defaults) > 1:
        errors.append(f"plans: only one plan may be the default, found {', '.join(defaults)}")
    if errors:
        raise PlansFileError(errors)
    return CatalogSpec(features=features, plans=plans, meters=meters, ai=ai)


def _ai(raw: Any, errors: list[str]) -> AiSettings:
    """`ai: {event: ai.tokens, currency: USD, models: {gpt-4o: {prompt: 250, completion: 1000}}}`
    Prices are minor units of the currency (cents) per million tokens."""
    if not isinstance(raw, Mapping):
        errors.append("ai: expected a mapping with event, currency and models")
        return AiSettings()
    for name in raw:
        if name not in ("event", "currency", "models"):
            errors.append(f"ai.{name}: unknown key (expected one of event, currency, models)")
    event = raw.get("event", "ai.tokens")
    if not isinstance(event, str) or not EVENT_TYPE.match(event):
        errors.append("ai.event: expected an event type, e.g. ai.tokens")
        event = "ai.tokens"
    currency = raw.get("currency", "USD")
    if not isinstance(currency, str) or not CURRENCY.match(currency):
        errors.append("ai.currency: expected an ISO 4217 code, e.g. USD")
        currency = "USD"
    models: dict[str, ai.Price] = {}
    raw_models = raw.get("models", {})
    if not isinstance(raw_models, Mapping):
        errors.append("ai.models: expected a mapping of model names to prices")
        raw_models = {}
    for model, price in raw_models.items():
        path = f"ai.models.{model}"
        if not isinstance(model, str) or not ai.MODEL.match(model):
            errors.append(f"{path}: expected a model name")
            continue
        if not isinstance(price, Mapping) or set(price) != {"prompt", "completion"}:
            errors.append(f"{path}: expected {{prompt: <minor units>, completion: <minor units>}}")
            continue
        amounts = [
            _price(price[side], f"{path}.{side}", errors) for side in ("prompt", "completion")
        ]
        if amounts[0] is not None and amounts[1] is not None:
            models[model] = ai.Price(amounts[0], amounts[1])
    return AiSettings(event=event, currency=currency, models=models)


def _price(raw: Any, path: str, errors: list[str]) -> Decimal | None:
    """A price as an integer or a decimal string; never a float, which would round."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        errors.append(f'{path}: expected minor units per million tokens, e.g. 250 or "7.5"')
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        value = Decimal(-1)
    if not value.is_finite() or value < 0:
        errors.append(f'{path}: expected a non-negative amount, e.g. 250 or "7.5"')
        return None
    return value


def _meters(raw: Any, errors: list[str]) -> dict[str, Meter]:
    if not isinstance(raw, Mapping):
        errors.append("meters: expected a mapping of meter keys to definitions")
        return {}
    meters: dict[str, Meter] = {}
    for key, body in raw.items():
        path = f"meters.{key}"
        if not isinstance(key, str) or not METER_KEY.match(key):
            errors.append(f"{path}: meter keys are lowercase words, digits and _, e.g. ai_tokens")
            continue
        if not isinstance(body, Mapping):
            errors.append(f"{path}: expected a mapping with event and aggregation")
            continue
        before = len(errors)
        for name in body:
            if name not in _METER_KEYS:
                errors.append(
                    f"{path}.{name}: unknown key (expected one of {', '.join(_METER_KEYS)})"
                )
        event = body.get("event")
        if not isinstance(event, str) or not EVENT_TYPE.match(event):
            errors.append(f"{path}.event: expected an event type, e.g. ai.tokens")
        raw_aggregation = body.get("aggregation")
        aggregation = None
        if raw_aggregation not in {a.value for a in Aggregation}:
            errors.append(f"{path}.aggregation: expected one of {_AGGREGATIONS}")
        else:
            aggregation = Aggregation(raw_aggregation)
        prop = body.get("property")
        if prop is not None and (not isinstance(prop, str) or not PROPERTY.match(prop)):
            errors.append(f"{path}.property: expected a property name, e.g. tokens")
        elif aggregation is not None and aggregation.needs_property and prop is None:
            errors.append(f"{path}.property: {aggregation} needs the property it reads")
        elif aggregation is Aggregation.COUNT and prop is not None:
            errors.append(f"{path}.property: count reads no property; remove it")
        filters = _meter_filters(body.get("filters", {}), f"{path}.filters", errors)
        group_by = body.get("group_by", [])
        if isinstance(group_by, str):
            group_by = [group_by]
        if (
            not isinstance(group_by, list)
            or len(group_by) > MAX_GROUP_BY
            or not all(isinstance(g, str) and PROPERTY.match(g) for g in group_by)
            or len(set(group_by)) != len(group_by)
        ):
            errors.append(f"{path}.group_by: expected up to {MAX_GROUP_BY} distinct property names")
            group_by = []
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            errors.append(f"{path}.description: expected text")
        subtract = body.get("subtract")
        if subtract is not None:
            if not isinstance(subtract, str) or not EVENT_TYPE.match(subtract) or subtract == event:
                errors.append(f"{path}.subtract: expected another event type, e.g. space.deleted")
            elif aggregation is not None and not aggregation.adds:
                errors.append(f"{path}.subtract: only count and sum meters can subtract")
        if len(errors) > before or aggregation is None or not isinstance(event, str):
            continue
        meters[key] = Meter(
            key=key,
            event_type=event,
            aggregation=aggregation,
            property=prop,
            filters=filters,
            group_by=tuple(group_by),
            description=description,
            subtract=subtract,
        )
    return meters


def _meter_filters(raw: Any, path: str, errors: list[str]) -> dict[str, tuple[FilterValue, ...]]:
    """`{model: {equals: gpt-4o}}` or `{model: {in: [gpt-4o, o3]}}`."""
    if not isinstance(raw, Mapping):
        errors.append(
            f"{path}: expected a mapping of property names to {{equals: v}} or {{in: [..]}}"
        )
        return {}
    filters: dict[str, tuple[FilterValue, ...]] = {}
    for name, condition in raw.items():
        where = f"{path}.{name}"
        if not isinstance(name, str) or not PROPERTY.match(name):
            errors.append(f"{where}: expected a property name")
            continue
        if not isinstance(condition, Mapping) or len(condition) != 1:
            errors.append(f"{where}: expected exactly one of equals or in")
            continue
        ((operator, operand),) = condition.items()
        if operator == "equals":
            values = [operand]
        elif operator == "in" and isinstance(operand, list) and operand:
            values = operand
        else:
            errors.append(f"{where}: expected {{equals: value}} or {{in: [values]}}")
            continue
        if len(values) > MAX_FILTER_VALUES or not all(
            isinstance(v, str | int | bool) for v in values
        ):
            errors.append(
                f"{where}: values are text, integers or true/false (at most {MAX_FILTER_VALUES})"
            )
            continue
        filters[name] = tuple(values)
    return filters


def _features(raw: Any, meters: Mapping[str, Meter], errors: list[str]) -> dict[str, Feature]:
    if not isinstance(raw, Mapping) or not raw:
        errors.append("features: expected a mapping of feature keys to definitions")
        return {}
    features: dict[str, Feature] = {}
    for key, body in raw.items():
        path = f"features.{key}"
        if not isinstance(key, str) or not FEATURE_KEY.match(key) or len(key) > MAX_KEY_LENGTH:
            errors.append(f"{path}: feature keys are dotted lowercase words, e.g. spaces.max")
            continue
        if not isinstance(body, Mapping):
            errors.append(f"{path}: expected a mapping with a type")
            continue
        raw_type = body.get("type")
        extra = {FeatureType.METERED.value: _QUOTA_KEYS, FeatureType.LIMIT.value: ("meter",)}
        allowed = _FEATURE_KEYS + extra.get(str(raw_type), ())
        for field in body:
            if field not in allowed:
                errors.append(f"{path}.{field}: unknown key (expected one of {', '.join(allowed)})")
        if raw_type not in {t.value for t in FeatureType}:
            errors.append(f"{path}.type: expected one of {_TYPES}")
            continue
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            errors.append(f"{path}.description: expected text")
            description = None
        config: dict[str, Any] = {}
        if raw_type == FeatureType.LIMIT and "meter" in body:
            gauge = meters.get(body["meter"]) if isinstance(body["meter"], str) else None
            if gauge is None or not gauge.aggregation.adds:
                errors.append(f"{path}.meter: expected a count or sum meter declared under meters")
                continue
            config = {"meter": gauge.key}
        if raw_type == FeatureType.METERED:
            policy = _quota_policy(body, path, meters, errors)
            if policy is None:
                continue
            config = policy.as_json()
        features[key] = Feature(
            key=key, type=FeatureType(raw_type), description=description, config=config
        )
    return features


def _quota_policy(
    body: Mapping[str, Any], path: str, meters: Mapping[str, Meter], errors: list[str]
) -> QuotaPolicy | None:
    before = len(errors)
    meter_key = body.get("meter")
    meter = meters.get(meter_key) if isinstance(meter_key, str) else None
    if meter is None:
        errors.append(f"{path}.meter: expected a meter declared under meters")
    elif meter.aggregation not in (Aggregation.SUM, Aggregation.COUNT) or meter.subtract:
        errors.append(f"{path}.meter: a quota draws on a sum or count meter that never subtracts")
    choices: dict[str, Any] = {}
    for name, kind, default in (
        ("reset", Reset, Reset.MONTH),
        ("anchor", Anchor, Anchor.CALENDAR),
        ("limit", LimitKind, LimitKind.HARD),
        ("enforcement", Enforcement, None),
    ):
        raw = body.get(name, default)
        if raw is not None and raw not in {item.value for item in kind}:
            errors.append(f"{path}.{name}: expected one of {', '.join(i.value for i in kind)}")
        choices[name] = kind(raw) if raw is not None and raw in {i.value for i in kind} else default
    overage = body.get("overage", False)
    if not isinstance(overage, bool):
        errors.append(f"{path}.overage: expected true or false")
    if len(errors) > before or meter is None:
        return None
    return QuotaPolicy(meter=meter.key, overage=overage, **choices)


def _plans(
    raw: Any, features: Mapping[str, Feature], errors: list[str]
) -> dict[str, PlanDefinition]:
    if not isinstance(raw, Mapping) or not raw:
        errors.append("plans: expected a mapping of plan keys to definitions")
        return {}
    plans: dict[str, PlanDefinition] = {}
    for key, body in raw.items():
        path = f"plans.{key}"
        if not isinstance(key, str) or not PLAN_KEY.match(key) or len(key) > MAX_KEY_LENGTH:
            errors.append(f"{path}: plan keys are lowercase words, digits, - and _")
            continue
        if not isinstance(body, Mapping):
            errors.append(f"{path}: expected a mapping with name and features")
            continue
        for field in body:
            if field not in _PLAN_KEYS:
                errors.append(
                    f"{path}.{field}: unknown key (expected one of {', '.join(_PLAN_KEYS)})"
                )
        name = body.get("name", key)
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            errors.append(f"{path}.name: expected text of at most 200 characters")
            name = key
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            errors.append(f"{path}.description: expected text")
            description = None
        default = body.get("default", False)
        if not isinstance(default, bool):
            errors.append(f"{path}.default: expected true or false")
            default = False
        values: dict[str, FeatureValue] = {}
        raw_values = body.get("features", {})
        if not isinstance(raw_values, Mapping):
            errors.append(f"{path}.features: expected a mapping of feature keys to values")
            raw_values = {}
        for feature_key, raw_value in raw_values.items():
            value_path = f"{path}.features.{feature_key}"
            feature = features.get(feature_key)
            if feature is None:
                errors.append(f"{value_path}: unknown feature (declare it under features)")
                continue
            parsed = parse_value(feature.type, raw_value)
            if isinstance(parsed, str):
                errors.append(f"{value_path}: {parsed}")
                continue
            values[feature_key] = parsed
        plans[key] = PlanDefinition(
            key=key, name=name.strip(), description=description, default=default, features=values
        )
    return plans
