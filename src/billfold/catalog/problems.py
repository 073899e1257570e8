"""Problems found in a plans document, each with its path, reported in the order the
document lists what they are about."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, TypeAdapter, ValidationError

from billfold.catalog.document import FEATURE_KINDS

M = TypeVar("M", bound=BaseModel)


class Problems:
    """The problems found so far, each with its path into the document; they come out
    in the order the document lists what they are about."""

    def __init__(self, document: Any) -> None:
        self._found: list[tuple[tuple[str, ...], str, bool]] = []
        self._order = _positions(document)

    def __len__(self) -> int:
        return len(self._found)

    def __bool__(self) -> bool:
        return bool(self._found)

    def add(self, path: tuple[str, ...], message: str, *, last: bool = False) -> None:
        """A problem of `path`; with `last`, of the block as a whole, after its items."""
        if (path, message, last) not in self._found:  # two checks may find the same
            self._found.append((path, message, last))

    def model(self, model: type[M], body: Any, path: tuple[str, ...]) -> M | None:
        """`body` as a `model`, or None with its problems added."""
        try:
            return model.model_validate(body)
        except ValidationError as error:
            self._translate(error, path, model)
            return None

    def adapted(self, adapter: TypeAdapter[Any], body: Any, path: tuple[str, ...]) -> Any:
        try:
            return adapter.validate_python(body)
        except ValidationError as error:
            self._translate(error, path, None, tagged=True)
            return None

    def _translate(
        self,
        error: ValidationError,
        path: tuple[str, ...],
        model: type[BaseModel] | None,
        *,
        tagged: bool = False,
    ) -> None:
        for item in error.errors():
            loc = [str(part) for part in item["loc"] if part != "[key]"]
            if tagged and loc:  # a union member names itself first: `metered`, ...
                model = FEATURE_KINDS.get(loc[0])
                loc = loc[1:]
            block = _block(model, loc[:-1]) if model else None
            keys: tuple[str, ...] = _keys_of(block) if block else ()
            if item["type"] in ("extra_forbidden", "invalid_key"):  # unknown, or not text
                message = f"unknown key (expected one of {', '.join(keys)})"
            elif item["type"] == "missing":
                message = "required"
            else:
                message = str(item["msg"])
            self.add((*path, *loc), message)

    def messages(self) -> list[str]:
        def position(found: tuple[tuple[str, ...], str, bool]) -> tuple[int, int]:
            path, _message, last = found
            for depth in range(len(path), 0, -1):
                span = self._order.get(path[:depth])
                if span is not None:
                    return (span[1], 1) if last else (span[0], 0)
            return (0, 0)

        ordered = sorted(self._found, key=position)  # stable: ties keep the finding order
        return [f"{'.'.join(path) or '(top)'}: {message}" for path, message, _ in ordered]


def _block(model: type[BaseModel], loc: list[str]) -> type[BaseModel] | None:
    """The block a problem at `loc` (its parent's path) is in: a section nested in
    `model`, such as a metered feature's `wallet`."""
    for name in loc:
        field = model.model_fields.get(name)
        nested = None
        for candidate in (field.annotation, *get_args(field.annotation)) if field else ():
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                nested = candidate
        if nested is None:
            return None
        model = nested
    return model


def _keys_of(model: type[BaseModel]) -> tuple[str, ...]:
    """The keys a block takes, as a message names them: a feature's `type` first."""
    names = tuple(model.model_fields)
    return ("type", *(n for n in names if n != "type")) if "type" in names else names


def _positions(document: Any) -> dict[tuple[str, ...], tuple[int, int]]:
    """Every mapping key's path, with where it starts and ends in a walk of the document."""
    spans: dict[tuple[str, ...], tuple[int, int]] = {}
    step = 0

    def walk(node: Any, path: tuple[str, ...]) -> None:
        nonlocal step
        if isinstance(node, Mapping):
            for key, value in node.items():
                here = (*path, str(key))
                start = step = step + 1
                walk(value, here)
                step += 1
                spans[here] = (start, step)

    walk(document, ())
    return spans
