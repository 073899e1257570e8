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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import TypeAdapter

from billfold.catalog.ai import MODEL, AiSettings, Price
from billfold.catalog.coupons import Coupon, read_coupons
from billfold.catalog.document import (
    FEATURE_KINDS,
    AiDef,
    FeatureDef,
    MeterDef,
    MeteredFeature,
    ModelPrice,
    PlanDef,
    PlansDocument,
)
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
    METER_KEY,
    Aggregation,
    Meter,
)
from billfold.catalog.prices import PlanPrice, read_prices
from billfold.catalog.problems import Problems
from billfold.catalog.quotas import QuotaPolicy, WalletOverage

MAX_FILE_BYTES: Final = 1_048_576


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
    coupons: dict[str, Coupon] = dataclasses.field(default_factory=dict)

    @property
    def default_plan(self) -> str | None:
        return next((key for key, plan in self.plans.items() if plan.default), None)


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
    found = Problems(document)
    found.model(PlansDocument, document, ())  # the top's own keys, and each section's shape

    def section(name: str) -> Mapping[Any, Any]:
        raw = document.get(name)
        return raw if isinstance(raw, Mapping) else {}

    meters = _meters(section("meters"), found)
    ai = _ai(section("ai"), found)
    coupons, coupon_problems = read_coupons(document.get("coupons"))
    for path, message in coupon_problems:
        found.add(path, message)
    features = _features(section("features"), meters, found)
    plans = _plans(section("plans"), features, meters, found)
    defaults = [key for key, plan in plans.items() if plan.default]
    if len(defaults) > 1:
        found.add(
            ("plans",), f"only one plan may be the default, found {', '.join(defaults)}", last=True
        )
    if problems or found:
        raise PlansFileError([*(problems or []), *found.messages()])
    return CatalogSpec(features=features, plans=plans, meters=meters, ai=ai, coupons=coupons)


def _key(
    found: Problems, path: tuple[str, ...], key: Any, pattern: Any, message: str
) -> str | None:
    if isinstance(key, str) and pattern.match(key) and len(key) <= MAX_KEY_LENGTH:
        return key
    found.add((*path, str(key)), message)
    return None


def _meters(raw: Mapping[Any, Any], found: Problems) -> dict[str, Meter]:
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
        if meter.allow_negative and aggregation is not Aggregation.SUM:
            found.add((*path, "allow_negative"), "only a sum meter takes negative values")
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
            allow_negative=meter.allow_negative,
        )
    return meters


def _ai(raw: Mapping[Any, Any], found: Problems) -> AiSettings:
    ai = found.model(AiDef, raw, ("ai",))
    raw_models = raw.get("models", {})
    models: dict[str, Price] = {}
    for model, body in (raw_models if isinstance(raw_models, Mapping) else {}).items():
        path = ("ai", "models", str(model))
        if not isinstance(model, str) or not MODEL.match(model):
            found.add(path, "expected a model name")
            continue
        if not isinstance(body, Mapping) or not {"prompt", "completion"} <= set(body):
            found.add(path, "expected {prompt: <minor units>, completion: <minor units>}")
            continue
        price = found.model(ModelPrice, body, path)
        if price is not None:
            models[model] = Price(price.prompt, price.completion, price.credits)
    if ai is None:
        return AiSettings()
    return AiSettings(
        event=ai.event, currency=ai.currency, models=models, credit_unit=ai.credit_unit
    )


_FEATURES: Final = TypeAdapter(FeatureDef)
_TYPES: Final = ", ".join(t.value for t in FeatureType)


def _features(
    raw: Mapping[Any, Any], meters: Mapping[str, Meter], found: Problems
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
        if not isinstance(kind, str) or kind not in FEATURE_KINDS:
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
                wallet=None
                if feature.wallet is None
                else WalletOverage(
                    feature.wallet.unit, feature.wallet.rate, feature.wallet.rounding
                ),
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
    found: Problems,
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
    raw: Mapping[Any, Any],
    features: Mapping[str, Feature],
    meters: Mapping[str, Meter],
    found: Problems,
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
        prices: tuple[PlanPrice, ...] = ()
        if plan.prices is not None:
            prices, problems = read_prices(plan.prices, meters, (*path, "prices"))
            for problem_path, message in problems:
                found.add(problem_path, message)
            _charged_twice(path, values, features, prices, found)
        plans[key] = PlanDefinition(
            key=key,
            name=(plan.name or key).strip(),
            description=plan.description,
            default=plan.default,
            features=values,
            for_sale=plan.for_sale,
            prices=prices,
        )
    return plans


def _charged_twice(
    path: tuple[str, ...],
    values: Mapping[str, FeatureValue],
    features: Mapping[str, Feature],
    prices: tuple[PlanPrice, ...],
    found: Problems,
) -> None:
    """A plan may not price in arrears a meter whose overage one of its features has paid
    from the wallet already at consume time: the customer would pay for it twice
    (decision 0042)."""
    priced = {meter for price in prices for meter in price.usage}
    for feature_key in sorted(values):
        config = features[feature_key].config
        meter = config.get("meter")
        if config.get("wallet") and meter in priced:
            found.add(
                (*path, "prices"),
                f"meter {meter} is priced here and its overage is paid from the wallet "
                f"by {feature_key}: that would charge it twice",
            )
