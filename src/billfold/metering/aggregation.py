"""How a meter turns stored usage events into numbers. Pure, no I/O.

The meter itself is declared in the plans file (`billfold.catalog.meters`). Values are
exact: numbers are read from the stored JSON text as `Decimal`, never as float.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from billfold.catalog.meters import Aggregation, FilterValue, Meter


class NotANumber(ValueError):
    """A `sum` or `max` meter met a value that is not a number."""


def exact(value: Any) -> Any:
    """A Decimal as an exact JSON string ("1500", "0.25"); other values unchanged."""
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    return value


def json_value(text: str | None) -> Any:
    """One property as stored (JSON text, or None when absent), numbers as Decimal."""
    if text is None:
        return None
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def _same(value: Any, allowed: tuple[FilterValue, ...]) -> bool:
    for candidate in allowed:
        if isinstance(candidate, bool) or isinstance(value, bool):
            if value is candidate:
                return True
        elif isinstance(candidate, int):
            if isinstance(value, Decimal) and value == candidate:
                return True
        elif value == candidate:
            return True
    return False


@dataclass
class Accumulator:
    """One bucket's running aggregate."""

    aggregation: Aggregation
    count: int = 0  # events seen
    net: int = 0  # events seen, less those that subtract
    total: Decimal = Decimal(0)
    top: Decimal | None = None
    seen: set[str] = field(default_factory=set)
    latest_at: datetime | None = None
    latest: Any = None

    def add(self, occurred_at: datetime, value: Any, negative: bool = False) -> None:
        self.count += 1
        self.net += -1 if negative else 1
        kind = self.aggregation
        if kind is Aggregation.COUNT:
            return
        if value is None:
            return  # an event without the property adds nothing but its count
        if kind is Aggregation.UNIQUE_COUNT:
            self.seen.add(json.dumps(value, default=str, sort_keys=True))
        elif kind is Aggregation.LATEST:
            if self.latest_at is None or occurred_at >= self.latest_at:
                self.latest_at, self.latest = occurred_at, value
        else:
            if not isinstance(value, Decimal):
                raise NotANumber(f"expected a number, found {value!r}")
            if kind is Aggregation.SUM:
                self.total += -value if negative else value
            elif self.top is None or value > self.top:
                self.top = value

    def result(self) -> Any:
        kind = self.aggregation
        if kind is Aggregation.COUNT:
            return Decimal(self.net)
        if kind is Aggregation.SUM:
            return self.total
        if kind is Aggregation.MAX:
            return self.top
        if kind is Aggregation.UNIQUE_COUNT:
            return Decimal(len(self.seen))
        return self.latest


@dataclass(frozen=True)
class Row:
    """One stored event as a meter sees it: its instant and the properties it reads."""

    occurred_at: datetime
    properties: Mapping[str, Any]
    negative: bool = False  # an event of the meter's `subtract` type


def matches(meter: Meter, row: Row) -> bool:
    return all(_same(row.properties.get(name), allowed) for name, allowed in meter.filters.items())


def group_of(meter: Meter, row: Row) -> tuple[Any, ...]:
    return tuple(row.properties.get(name) for name in meter.group_by)


def aggregate(
    meter: Meter, rows: Iterable[Row], bucket_of: Any
) -> dict[tuple[Any, tuple[Any, ...]], Accumulator]:
    """Aggregate `rows` per (bucket, group); `bucket_of(instant)` names each row's bucket."""
    buckets: dict[tuple[Any, tuple[Any, ...]], Accumulator] = {}
    for row in rows:
        if not matches(meter, row):
            continue
        key = (bucket_of(row.occurred_at), group_of(meter, row))
        accumulator = buckets.get(key)
        if accumulator is None:
            accumulator = buckets[key] = Accumulator(meter.aggregation)
        value = row.properties.get(meter.property) if meter.property else None
        accumulator.add(row.occurred_at, value, row.negative)
    return buckets
