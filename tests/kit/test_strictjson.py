"""The strict reader: every key given twice is found, however the text is spaced and
whatever its strings hold, and the same key in different objects is fine."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billfold.kit import strictjson

TWICE = [
    b'{"a": 1, "a": 2}',
    b'{"a" : 1, "a":2}',
    b'{"a"\n:1,"a"\t: 2}',
    b'[{"x": {"k": 1, "k": 1}}]',
    b'{"s": "\\":", "a": 1, "a": 2}',
    b'{"a\\"": 1, "a\\"": 2}',
]


@pytest.mark.parametrize("raw", TWICE)
def test_a_key_given_twice_is_refused(raw: bytes) -> None:
    with pytest.raises(strictjson.NotStrictJson, match="appears twice"):
        strictjson.loads(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"s": "\\":", "a": 1}',
        b'{"a" : {"a": 1}, "b": [{"a": 2}, {"a": 3}]}',
        b'{"time": "2026-12-07T03:57:18Z", "note": "a\\"b"}',
        b"[]",
        b"{}",
    ],
)
def test_the_same_key_in_different_objects_is_fine(raw: bytes) -> None:
    assert strictjson.loads(raw) == json.loads(raw)


def test_nesting_is_bounded() -> None:
    ok = b"[" * strictjson.MAX_DEPTH + b"]" * strictjson.MAX_DEPTH
    assert strictjson.loads(ok) is not None
    deep = b"[" * (strictjson.MAX_DEPTH + 1) + b"]" * (strictjson.MAX_DEPTH + 1)
    with pytest.raises(strictjson.NotStrictJson, match="nested more than"):
        strictjson.loads(deep)


keys = st.sampled_from(["a", "b", 'c"', "d:", '":'])
scalars = st.one_of(st.integers(), st.text(alphabet='ab":\\ ', max_size=4), st.none())


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, bool]:
    """JSON text written by hand, with keys maybe repeated and spacing varied; and
    whether some object repeats a key."""
    twice = False

    def value(depth: int) -> str:
        nonlocal twice
        if depth > 2 or draw(st.booleans()):
            return json.dumps(draw(scalars))
        names = draw(st.lists(keys, max_size=4))
        twice = twice or len(set(names)) != len(names)
        gap = draw(st.sampled_from(["", " ", "\n"]))
        members = [f"{json.dumps(name)}{gap}:{value(depth + 1)}" for name in names]
        return "{" + ",".join(members) + "}"

    text = value(0)
    return text, twice


@given(documents())
def test_a_repeated_key_is_found_exactly_when_there_is_one(document: tuple[str, bool]) -> None:
    text, twice = document
    if twice:
        with pytest.raises(strictjson.NotStrictJson, match="appears twice"):
            strictjson.loads(text.encode())
    else:
        parsed: Any = strictjson.loads(text.encode())
        assert parsed == json.loads(text)
