"""Usage events as they arrive: JSON or CloudEvents 1.0, one or a batch. Pure, no I/O.

Each event is checked on its own, so one bad event is rejected with a reason and never
takes the good ones beside it down. Numbers are kept exact: a decimal that a float
cannot hold digit for digit is refused, not rounded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

from billfold.customers.service import EXTERNAL_ID
from billfold.metering.model import EVENT_TYPE

MAX_BATCH: Final = 10_000
MAX_PROPERTIES_BYTES: Final = 8_192
MAX_KEY_LENGTH: Final = 255

JSON_TYPE: Final = "application/json"
CLOUDEVENT_TYPE: Final = "application/cloudevents+json"
CLOUDEVENTS_BATCH_TYPE: Final = "application/cloudevents-batch+json"
MEDIA_TYPES: Final = (JSON_TYPE, CLOUDEVENT_TYPE, CLOUDEVENTS_BATCH_TYPE)

_JSON_FIELDS = frozenset(
    ("idempotency_key", "customer", "type", "service", "correlation_id", "timestamp", "properties")
)
# CloudEvents context attributes Billfold maps, and the ones it accepts and ignores.
_CE_FIELDS = frozenset(
    ("specversion", "id", "source", "subject", "type", "time", "data", "datacontenttype")
)
_CE_IGNORED = frozenset(("dataschema",))
CORRELATION_EXTENSION: Final = "correlationid"


class BodyError(ValueError):
    """The body as a whole cannot be read: not JSON, or not the shape its type promises."""


class _Inexact(float):
    """A JSON decimal that a float would change; found and refused per event."""


def _parse_float(text: str) -> float:
    value = float(text)
    if Decimal(repr(value)) != Decimal(text):
        return _Inexact(value)
    return value


def json_number(value: Decimal) -> int | float | None:
    """`value` as a JSON number that reads back digit for digit (see `_parse_float`), or
    None when a float cannot hold it."""
    if value == value.to_integral_value():
        return int(value)
    number = _parse_float(str(value))
    return None if isinstance(number, _Inexact) else number


@dataclass(frozen=True)
class UsageEvent:
    idempotency_key: str
    customer: str
    type: str
    service: str | None
    correlation_id: str | None
    timestamp: datetime | None  # None: when Billfold received it
    properties: dict[str, Any]


@dataclass(frozen=True)
class Rejection:
    idempotency_key: str | None
    code: str
    reason: str


def read_body(raw: bytes, media_type: str) -> list[Any]:
    """The body's items, still unchecked. A single event is a batch of one."""
    if media_type not in MEDIA_TYPES:
        raise BodyError(f"send {', '.join(MEDIA_TYPES)}, not {media_type or 'no content type'}")
    try:
        document = json.loads(raw, parse_float=_parse_float)
    except (ValueError, RecursionError) as error:
        raise BodyError(f"the body is not valid JSON: {error}") from None
    if media_type == CLOUDEVENT_TYPE:
        if not isinstance(document, dict):
            raise BodyError("a structured CloudEvent is one JSON object")
        items = [document]
    elif media_type == CLOUDEVENTS_BATCH_TYPE:
        if not isinstance(document, list):
            raise BodyError("a CloudEvents batch is a JSON array of events")
        items = document
    else:
        items = document if isinstance(document, list) else [document]
    if not items:
        raise BodyError("the batch is empty")
    if len(items) > MAX_BATCH:
        raise BodyError(f"a batch holds at most {MAX_BATCH} events, not {len(items)}")
    return items


def check(
    item: Any, media_type: str, now: datetime, late: timedelta, skew: timedelta
) -> UsageEvent | Rejection:
    """One item of the body as a usage event, or the reason it is refused."""
    if not isinstance(item, dict):
        return Rejection(None, "invalid_event", "an event is a JSON object")
    fields: dict[str, Any]
    if media_type == JSON_TYPE:
        fields, unknown = item, sorted(set(item) - _JSON_FIELDS)
    else:
        mapped, unknown = _from_cloudevent(item)
        if isinstance(mapped, Rejection):
            return mapped
        fields = mapped
    key = fields.get("idempotency_key")
    key = key if isinstance(key, str) and 0 < len(key) <= MAX_KEY_LENGTH else None
    id_name = "id" if media_type != JSON_TYPE else "idempotency_key"

    def refuse(reason: str, code: str = "invalid_event") -> Rejection:
        return Rejection(key, code, reason)

    if unknown:
        return refuse(f"unknown field {unknown[0]!r}")
    if key is None:
        return refuse(f"{id_name}: required, 1 to {MAX_KEY_LENGTH} characters")
    customer = fields.get("customer")
    if not isinstance(customer, str) or not EXTERNAL_ID.match(customer):
        where = "subject" if media_type != JSON_TYPE else "customer"
        return refuse(
            f"{where}: required, a customer id of 1 to 255 characters without spaces or / ? # %"
        )
    kind = fields.get("type")
    if not isinstance(kind, str) or not EVENT_TYPE.match(kind):
        return refuse("type: required, e.g. ai.tokens (letters, digits and . _ : / -)")
    optional: dict[str, str | None] = {}
    for name, label in (
        ("service", "source" if media_type != JSON_TYPE else "service"),
        ("correlation_id", "correlation_id"),
    ):
        value = fields.get(name)
        if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 255):
            return refuse(f"{label}: 1 to 255 characters")
        optional[name] = value
    timestamp = None
    raw_time = fields.get("timestamp")
    if raw_time is not None:
        timestamp = _instant(raw_time)
        if timestamp is None:
            return refuse(
                "timestamp: an ISO 8601 instant with a time zone, e.g. 2026-06-01T12:00:00Z"
            )
        if timestamp < now - late:
            return refuse(
                f"timestamp is older than the late window ({_span(late)})", "event_too_old"
            )
        if timestamp > now + skew:
            return refuse(
                f"timestamp is further ahead than the clock-skew allowance ({_span(skew)})",
                "event_in_future",
            )
    properties = fields.get("properties", {})
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        return refuse("properties: a JSON object")
    problem = _exact(properties)
    if problem:
        return refuse(problem)
    if len(json.dumps(properties, separators=(",", ":"))) > MAX_PROPERTIES_BYTES:
        return refuse(f"properties: at most {MAX_PROPERTIES_BYTES} bytes of JSON")
    return UsageEvent(
        idempotency_key=key,
        customer=customer,
        type=kind,
        service=optional["service"],
        correlation_id=optional["correlation_id"],
        timestamp=timestamp,
        properties=properties,
    )


def _from_cloudevent(item: dict[str, Any]) -> tuple[dict[str, Any] | Rejection, list[str]]:
    """CloudEvents 1.0 attributes as Billfold's fields: id, source, subject, type, data."""
    key = item.get("id") if isinstance(item.get("id"), str) else None
    if item.get("specversion") != "1.0":
        return Rejection(key, "invalid_event", 'specversion: expected "1.0"'), []
    content_type = item.get("datacontenttype", JSON_TYPE)
    if content_type != JSON_TYPE:
        return Rejection(key, "invalid_event", "datacontenttype: expected application/json"), []
    unknown = [
        name
        for name in item
        if name not in _CE_FIELDS and name not in _CE_IGNORED and name != CORRELATION_EXTENSION
    ]
    # Extension attributes are lowercase alphanumerics (CloudEvents 1.0); keep them out.
    unknown = [name for name in unknown if not (name.isalnum() and name.islower())]
    fields = {
        "idempotency_key": item.get("id"),
        "service": item.get("source"),
        "customer": item.get("subject"),
        "type": item.get("type"),
        "timestamp": item.get("time"),
        "properties": item.get("data", {}),
        "correlation_id": item.get(CORRELATION_EXTENSION),
    }
    if fields["service"] is None:
        return Rejection(key, "invalid_event", "source: required by CloudEvents"), []
    return fields, sorted(unknown)


def _instant(raw: Any) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return None
    if value.tzinfo is None:
        return None
    return value.astimezone(UTC)


def _exact(value: Any, path: str = "properties") -> str | None:
    if isinstance(value, _Inexact):
        return f"{path}: more digits than Billfold stores exactly; send it as a string"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path}: not a finite number"
    if isinstance(value, dict):
        for name, item in value.items():
            found = _exact(item, f"{path}.{name}")
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _exact(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86_400 == 0:
        return f"{seconds // 86_400} days"
    if seconds % 3_600 == 0:
        return f"{seconds // 3_600} hours"
    return f"{seconds} seconds"
