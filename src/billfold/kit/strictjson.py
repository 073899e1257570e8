"""JSON text read strictly: the one reader behind every JSON body (docs/decisions/0022).

UTF-8 without a byte order mark; one JSON value; no object key twice; at most `MAX_DEPTH`
levels of arrays and objects. Pure, no HTTP: the edge (`billfold.http.bodies`) and the
usage-event reader (`billfold.metering.events`) both call `loads` and turn `NotStrictJson`
into their own problem.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final, NoReturn

from billfold.kit.schemas import printable

# pydantic's JSON parser (jiter) refuses deeper nesting as well.
MAX_DEPTH: Final = 200
_BOM = b"\xef\xbb\xbf"
_CONTAINERS = frozenset((dict, list))


class NotStrictJson(ValueError):
    """Why a body is not strict JSON, told to the client as is."""


class _DuplicateKey(Exception):
    pass


class _Constant(Exception):
    pass


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return found


def _no_constant(name: str) -> NoReturn:
    raise _Constant(name)


def too_deep(value: Any) -> bool:
    """Whether `value` nests more than MAX_DEPTH arrays and objects: level by level,
    without recursion (and without a tuple per container: a batch holds thousands)."""
    level = [value]
    depth = 1
    while level:
        deeper: list[Any] = []
        for item in level:
            for child in item.values() if type(item) is dict else item:
                if type(child) in _CONTAINERS:
                    deeper.append(child)
        if deeper and depth >= MAX_DEPTH:
            return True
        level = deeper
        depth += 1
    return False


def loads(
    raw: bytes,
    *,
    parse_float: Callable[[str], Any] | None = None,
    constants: bool = False,
) -> Any:
    """The JSON value of `raw`, read strictly, or `NotStrictJson` saying why not.

    `constants` lets `NaN` and `Infinity` through (a caller that refuses them itself, per
    item); `parse_float` is `json.loads`'s."""
    if raw.startswith(_BOM):
        raise NotStrictJson("the body must be UTF-8 without a byte order mark")
    if b"\x00" in raw:  # a raw NUL is nowhere valid JSON; in UTF-16 and -32 it is everywhere
        raise NotStrictJson("the body must be UTF-8 (this looks like UTF-16 or UTF-32)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotStrictJson(f"the body must be UTF-8 (byte {error.start} is not)") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique,
            parse_float=parse_float,
            parse_constant=None if constants else _no_constant,
        )
    except json.JSONDecodeError as error:
        raise NotStrictJson(f"line {error.lineno}, column {error.colno}: {error.msg}") from None
    except _DuplicateKey as error:
        raise NotStrictJson(
            f'the key "{printable(error.args[0])}" appears twice in one object'
        ) from None
    except _Constant as error:
        raise NotStrictJson(f"{error.args[0]} is not a JSON number") from None
    except RecursionError:
        raise NotStrictJson(f"nested more than {MAX_DEPTH} levels deep") from None
    kind = type(value)
    if (kind is dict or kind is list) and too_deep(value):
        raise NotStrictJson(f"nested more than {MAX_DEPTH} levels deep")
    return value
