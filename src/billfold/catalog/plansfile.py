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

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from billfold.catalog.model import (
    FEATURE_KEY,
    MAX_KEY_LENGTH,
    PLAN_KEY,
    Feature,
    FeatureType,
    FeatureValue,
    PlanDefinition,
    parse_value,
)

SUPPORTED_VERSION = 1
MAX_FILE_BYTES = 1_048_576
_TOP_KEYS = ("version", "features", "plans")
_FEATURE_KEYS = ("type", "description")
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
    features = _features(document.get("features"), errors)
    plans = _plans(document.get("plans"), features, errors)
    defaults = [key for key, plan in plans.items() if plan.default]
    if len(defaults) > 1:
        errors.append(f"plans: only one plan may be the default, found {', '.join(defaults)}")
    if errors:
        raise PlansFileError(errors)
    return CatalogSpec(features=features, plans=plans)


def _features(raw: Any, errors: list[str]) -> dict[str, Feature]:
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
        for field in body:
            if field not in _FEATURE_KEYS:
                errors.append(f"{path}.{field}: unknown key (expected type or description)")
        raw_type = body.get("type")
        if raw_type == "metered":
            errors.append(f"{path}.type: metered features need metering, which is not enabled yet")
            continue
        if raw_type not in {t.value for t in FeatureType}:
            errors.append(f"{path}.type: expected one of {_TYPES}")
            continue
        description = body.get("description")
        if description is not None and not isinstance(description, str):
            errors.append(f"{path}.description: expected text")
            description = None
        features[key] = Feature(key=key, type=FeatureType(raw_type), description=description)
    return features


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
