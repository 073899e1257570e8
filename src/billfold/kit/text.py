"""What a stored string or JSON value may hold: text that every backend keeps as sent.

PostgreSQL refuses a NUL byte in `text` and `jsonb`, SQLite stores it; neither can store a
lone UTF-16 surrogate (`"\\ud800"` in JSON) as UTF-8; and JSON has no NaN or Infinity,
which PostgreSQL's `jsonb` refuses and SQLite's JSON turns into `null`. So all of them are
refused where they come in, with a reason a client can act on, never at the database.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

NUL = "\x00"


def text_fault(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None if it can."""
    if NUL in value:
        return "contains a NUL character (\\u0000)"
    if value.isascii():  # a flag of the string, not a scan: no surrogate in ASCII
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate, which is not valid Unicode"
    return None


def json_faults(
    value: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every place in a decoded JSON value that cannot be stored, as (path, reason).

    Keys are checked like strings; a number must be finite."""
    if isinstance(value, str):
        fault = text_fault(value)
        if fault is not None:
            yield path, fault
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield path, "is not a finite number (JSON has no NaN or Infinity)"
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                fault = text_fault(key)
                if fault is not None:
                    yield (*path, key), f"has a key that {fault}"
            yield from json_faults(item, (*path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from json_faults(item, (*path, index))
