"""The catalog's value types: feature types, feature values and plan definitions.

A plan never decides access by its name: code asks for a feature's value, and the
value comes from the grants a customer holds (see `billfold.grants.resolution`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from billfold.catalog.prices import PlanPrice

FEATURE_KEY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
PLAN_KEY = re.compile(r"^[a-z][a-z0-9_-]*$")
GLOB = re.compile(r"^[A-Za-z0-9_.*?\[\]!:/-]{1,200}$")
MAX_KEY_LENGTH: Final = 100
MAX_PATTERNS: Final = 200


class FeatureType(StrEnum):
    BOOLEAN = "boolean"
    LIMIT = "limit"
    PATTERN = "pattern"
    METERED = "metered"  # a quota per reset period, fed by a meter

    @property
    def counts(self) -> bool:
        """Its value is a number (or `unlimited`): limit and metered features."""
        return self in (FeatureType.LIMIT, FeatureType.METERED)


class Unlimited:
    """The `unlimited` value of a limit feature; larger than every integer."""

    _instance: Unlimited | None = None

    def __new__(cls) -> Unlimited:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNLIMITED"


UNLIMITED: Final = Unlimited()
UNLIMITED_WORD: Final = "unlimited"

LimitValue = int | Unlimited
FeatureValue = bool | int | Unlimited | tuple[str, ...]


@dataclass(frozen=True)
class Feature:
    key: str
    type: FeatureType
    description: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    def zero(self) -> FeatureValue:
        """The value a customer holds when no live grant gives this feature."""
        if self.type is FeatureType.BOOLEAN:
            return False
        if self.type.counts:
            return 0
        return ()


@dataclass(frozen=True)
class PlanDefinition:
    key: str
    name: str
    description: str | None
    default: bool
    features: dict[str, FeatureValue]
    for_sale: bool = True  # offered to customers (upgrade hints); False: only granted
    prices: tuple[PlanPrice, ...] = ()  # per currency and interval; none: not billed


def to_json(value: FeatureValue) -> Any:
    """A feature value as stored and as answered: `unlimited` is a word, patterns a list."""
    if isinstance(value, Unlimited):
        return UNLIMITED_WORD
    if isinstance(value, tuple):
        return list(value)
    return value


def from_json(feature_type: FeatureType, raw: Any) -> FeatureValue:
    """The inverse of `to_json` for values already validated on the way in."""
    if feature_type.counts:
        return UNLIMITED if raw == UNLIMITED_WORD else int(raw)
    if feature_type is FeatureType.PATTERN:
        return tuple(str(item) for item in raw)
    return bool(raw)


def parse_value(feature_type: FeatureType, raw: Any) -> FeatureValue | str:
    """Validate a raw value for a feature type: the value, or an error message."""
    if feature_type is FeatureType.BOOLEAN:
        return raw if isinstance(raw, bool) else "expected true or false"
    if feature_type.counts:
        if raw == UNLIMITED_WORD:
            return UNLIMITED
        if type(raw) is not int:
            return 'expected an integer or "unlimited"'
        if raw < 0:
            return 'expected a non-negative integer or "unlimited"'
        return raw
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        return 'expected a list of glob patterns, e.g. ["basic_*"]'
    if len(raw) > MAX_PATTERNS:
        return f"expected at most {MAX_PATTERNS} patterns"
    for item in raw:
        if not GLOB.match(item):
            return f"pattern {item!r} may hold only letters, digits and _ . * ? [ ] ! : / -"
    return tuple(sorted(set(raw)))
