"""Meters as a plans file declares them: which events they read, and how they add up.

A meter names one event type, an aggregation, the property it reads (for every
aggregation but `count`), equality filters on properties, and the properties it groups by.
How stored events are aggregated is `billfold.metering.aggregation`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

METER_KEY = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
PROPERTY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
EVENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")
MAX_FILTER_VALUES: Final = 100
MAX_GROUP_BY: Final = 5

FilterValue = str | int | bool


class Aggregation(StrEnum):
    COUNT = "count"
    SUM = "sum"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"

    @property
    def adds(self) -> bool:
        """Its events add up, so some may subtract: count and sum."""
        return self in (Aggregation.COUNT, Aggregation.SUM)

    @property
    def needs_property(self) -> bool:
        return self is not Aggregation.COUNT


@dataclass(frozen=True)
class Meter:
    key: str
    event_type: str
    aggregation: Aggregation
    property: str | None = None
    # property -> the values it may hold (one value: equals; several: in)
    filters: Mapping[str, tuple[FilterValue, ...]] = field(default_factory=dict)
    group_by: tuple[str, ...] = ()
    description: str | None = None
    # Events of this type count negatively (count: -1, sum: -value): a gauge, such as
    # spaces created minus spaces deleted.
    subtract: str | None = None
    # A sum meter takes negative values (a correction, a refund) only when it says so;
    # otherwise an event with one is refused at ingest (docs/decisions/0023).
    allow_negative: bool = False

    def as_json(self) -> dict[str, Any]:
        """The definition as stored and as answered."""
        definition: dict[str, Any] = {
            "event": self.event_type,
            "aggregation": self.aggregation.value,
            "property": self.property,
            "filters": {key: list(values) for key, values in sorted(self.filters.items())},
            "group_by": list(self.group_by),
            "description": self.description,
            "subtract": self.subtract,
        }
        if self.allow_negative:  # only when set: definitions stored before it stay equal
            definition["allow_negative"] = True
        return definition

    def reads_numbers(self) -> bool:
        """Its property must hold numbers: a sum or a max adds or compares them."""
        return self.aggregation in (Aggregation.SUM, Aggregation.MAX)

    @classmethod
    def from_json(cls, key: str, raw: Mapping[str, Any]) -> Meter:
        return cls(
            key=key,
            event_type=raw["event"],
            aggregation=Aggregation(raw["aggregation"]),
            property=raw.get("property"),
            filters={k: tuple(v) for k, v in (raw.get("filters") or {}).items()},
            group_by=tuple(raw.get("group_by") or ()),
            description=raw.get("description"),
            subtract=raw.get("subtract"),
            allow_negative=bool(raw.get("allow_negative", False)),
        )

    def properties_read(self) -> tuple[str, ...]:
        """Every property the meter looks at, each once, in a fixed order."""
        names = [*self.filters, *self.group_by]
        if self.property is not None:
            names.append(self.property)
        return tuple(dict.fromkeys(names))
