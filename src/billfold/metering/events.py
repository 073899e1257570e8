"""Usage events as they arrive: JSON or CloudEvents 1.0, one or a batch. Pure, no I/O.

Each event is checked on its own, so one bad event is rejected with a reason and never
takes the good ones beside it down. Numbers are kept exact: a decimal that a float
cannot hold digit for digit is refused, not rounded. Text a backend cannot store (a NUL,
a lone UTF-16 surrogate: `billfold.kit.text`) and numbers JSON has not (NaN, Infinity,
1e309) are refused with the event that holds them.

A key sent again is a retry only with the same event (`same_event`); with another body
it is refused (docs/decisions/0023).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, NamedTuple

from pydantic_core import PydanticSerializationError, to_json

from billfold.catalog.meters import EVENT_TYPE
from billfold.customers.service import EXTERNAL_ID
from billfold.kit import strictjson
from billfold.kit.schemas import DECIMAL_STRING
from billfold.kit.text import NUL, json_faults, text_fault

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


# Named tuples, not dataclasses: a batch makes 10,000 of them, and a tuple is built about
# five times faster than a frozen dataclass. They are as immutable.
class UsageEvent(NamedTuple):
    idempotency_key: str
    customer: str
    type: str
    service: str | None
    correlation_id: str | None
    timestamp: datetime | None  # None: when Billfold received it
    properties: dict[str, Any]
    # The properties as compact JSON, as the check measured them; stored as is.
    properties_json: str | None = None


class Rejection(NamedTuple):
    idempotency_key: str | None
    code: str
    reason: str


def read_body(raw: bytes, media_type: str) -> list[Any]:
    """The body's items, still unchecked. A single event is a batch of one."""
    if media_type not in MEDIA_TYPES:
        raise BodyError(f"send {', '.join(MEDIA_TYPES)}, not {media_type or 'no content type'}")
    try:
        # The one strict reader (decision 0022); NaN and Infinity are refused per event.
        document = strictjson.loads(raw, parse_float=_parse_float, constants=True)
    except strictjson.NotStrictJson as error:
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
        fields, unknown = (
            item,
            ([] if item.keys() <= _JSON_FIELDS else sorted(set(item) - _JSON_FIELDS)),
        )
    else:
        mapped, unknown = _from_cloudevent(item)
        if isinstance(mapped, Rejection):
            return mapped
        fields = mapped
    key = fields.get("idempotency_key")
    key = key if isinstance(key, str) and 0 < len(key) <= MAX_KEY_LENGTH else None
    cloud = media_type != JSON_TYPE
    id_name = "id" if cloud else "idempotency_key"
    if key is not None and not (key.isascii() and NUL not in key) and (fault := _fault(key)):
        return Rejection(None, "invalid_event", f"{id_name}: {fault}")
    if unknown:
        return Rejection(key, "invalid_event", f"unknown field {unknown[0]!r}")
    if key is None:
        return Rejection(
            key, "invalid_event", f"{id_name}: required, 1 to {MAX_KEY_LENGTH} characters"
        )
    customer = fields.get("customer")
    where = "subject" if cloud else "customer"
    # EXTERNAL_ID refuses a NUL; only non-ASCII text needs a deeper look.
    if isinstance(customer, str) and not customer.isascii() and (fault := _fault(customer)):
        return Rejection(key, "invalid_event", f"{where}: {fault}")
    if not isinstance(customer, str) or not EXTERNAL_ID.match(customer):
        return Rejection(
            key,
            "invalid_event",
            f"{where}: required, a customer id of 1 to 255 characters without spaces or / ? # %",
        )
    kind = fields.get("type")
    if not isinstance(kind, str) or not EVENT_TYPE.match(kind):
        return Rejection(
            key, "invalid_event", "type: required, e.g. ai.tokens (letters, digits and . _ : / -)"
        )
    service = fields.get("service")
    if service is not None and (fault := _short_text(service)):
        return Rejection(key, "invalid_event", f"{'source' if cloud else 'service'}: {fault}")
    correlation_id = fields.get("correlation_id")
    if correlation_id is not None and (fault := _short_text(correlation_id)):
        name = CORRELATION_EXTENSION if cloud else "correlation_id"
        return Rejection(key, "invalid_event", f"{name}: {fault}")
    timestamp = None
    raw_time = fields.get("timestamp")
    if raw_time is not None:
        timestamp = _instant(raw_time)
        if timestamp is None:
            return Rejection(
                key,
                "invalid_event",
                "timestamp: an ISO 8601 instant with a time zone, e.g. 2026-06-01T12:00:00Z",
            )
        if timestamp < now - late:
            return Rejection(
                key, "event_too_old", f"timestamp is older than the late window ({_span(late)})"
            )
        if timestamp > now + skew:
            return Rejection(
                key,
                "event_in_future",
                f"timestamp is further ahead than the clock-skew allowance ({_span(skew)})",
            )
    properties = fields.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        return Rejection(key, "invalid_event", "properties: a JSON object")
    problem = _exact(properties)
    if problem:
        return Rejection(key, "invalid_event", problem)
    try:
        encoded = to_json(properties)  # compact UTF-8, in Rust: 7x json.dumps on small objects
    except PydanticSerializationError:  # a lone surrogate, which UTF-8 cannot encode
        encoded = None
    # to_json writes a NUL as \u0000; the text "\u0000" is there only as "\\u0000".
    if encoded is None or b"\\u0000" in encoded:
        problem = _text_problem(properties)
        if problem is not None:
            return Rejection(key, "invalid_event", problem)
        if encoded is None:
            return Rejection(key, "invalid_event", "properties: not valid Unicode")
    if len(encoded) > MAX_PROPERTIES_BYTES:
        return Rejection(
            key, "invalid_event", f"properties: at most {MAX_PROPERTIES_BYTES} bytes of JSON"
        )
    text = encoded.decode("utf-8")
    return UsageEvent(key, customer, kind, service, correlation_id, timestamp, properties, text)


_SHORT = "1 to 255 characters"


def _fault(value: str) -> str | None:
    """`text_fault`, with a fast path for the usual ASCII text."""
    if value.isascii() and NUL not in value:
        return None
    return text_fault(value)


def _short_text(value: Any) -> str | None:
    """Why `value` is not a short text, or None."""
    if not isinstance(value, str) or not 0 < len(value) <= 255:
        return _SHORT
    return _fault(value)


def _text_problem(properties: dict[str, Any]) -> str | None:
    for path, fault in json_faults(properties, ("properties",)):
        return f"{_dotted(path)}: {fault}"
    return None


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # A name that cannot be stored is not repeated back; its place is.
            shown = part if _fault(part) is None else ascii(part)
            out += f".{shown}" if out else shown
    return out


def same_event(
    event: UsageEvent,
    customer: str,
    kind: str,
    service: str | None,
    occurred_at: datetime | None,
    properties: Mapping[str, Any],
) -> bool:
    """Whether `event` says what a stored (or earlier) event of its idempotency key said:
    the same customer, type, service, timestamp (`occurred_at` None: none was sent) and
    properties, whatever the order of their keys. The correlation id, a trace of the
    request, may differ. Off the hot path: only a key sent again asks."""
    return (
        event.customer == customer
        and event.type == kind
        and event.service == service
        and event.timestamp == occurred_at
        and sorted_json(event.properties) == sorted_json(properties)
    )


def sorted_json(value: Any) -> str:
    """A JSON value as text with every object's keys sorted: equal values, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# A decimal string (`kit.schemas.DECIMAL_STRING`, the one rule) holding at most 28
# digits once written without an exponent (Decimal's exact precision): "1e3" is 1000,
# "1e30" is refused.
MAX_DECIMAL_DIGITS: Final = 28


def _plain_digits(value: Decimal) -> int:
    """How many digits `value` has written out without an exponent (1e3: 4, 1e-3: 3)."""
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # a decimal string is finite
    return len(digits) + exponent if exponent >= 0 else max(len(digits), -exponent)


def metered_number(value: Any) -> Decimal | None:
    """A metered property's value as a number: a JSON number, or a decimal string
    ("12.5", "-3"); None for anything else (docs/decisions/0023)."""
    kind = type(value)
    if kind is int:
        return Decimal(value)
    if kind is float or kind is _Inexact:
        return Decimal(repr(value)) if math.isfinite(value) else None
    if kind is Decimal:
        return value if value.is_finite() else None
    if kind is str and len(value) <= _LONGEST and DECIMAL_STRING.fullmatch(value):
        number = Decimal(value)
        if _plain_digits(number) <= MAX_DECIMAL_DIGITS:
            return number
    return None


# Longer text is refused before Decimal reads it (an exponent of a million digits).
_LONGEST: Final = 64


NUMBER_RULE: Final = (
    f'a JSON number or a decimal string written as JSON writes a number, such as "12.5", '
    f'"-3" or "1e3" (at most {MAX_DECIMAL_DIGITS} digits written out; no spaces, _ or +)'
)


def _from_cloudevent(item: dict[str, Any]) -> tuple[dict[str, Any] | Rejection, list[str]]:
    """CloudEvents 1.0 attributes as Billfold's fields: id, source, subject, type, data."""
    key = item.get("id") if isinstance(item.get("id"), str) else None
    key = key if key is not None and _fault(key) is None else None  # answered back as is
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


_PLAIN = frozenset((str, int, bool, type(None)))  # exact as they are; `_exact` skips them


def _exact(value: Any, path: str = "properties") -> str | None:
    if type(value) in _PLAIN:
        return None
    if isinstance(value, float) and not math.isfinite(value):  # NaN, Infinity, 1e309
        return f"{path}: not a finite number (JSON has no NaN or Infinity)"
    if isinstance(value, _Inexact):
        return f"{path}: more digits than Billfold stores exactly; send it as a string"
    if isinstance(value, dict):
        for name, item in value.items():
            if type(item) in _PLAIN:
                continue
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
