"""The tests run on plans of their own (tests/fixtures/), never on examples/: the README
tour has a new user edit examples/plans.yaml, and `make test` must pass after that."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import PLANS, ROOT

TESTS = ROOT / "tests"


def _strings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def test_the_harness_plans_are_the_tests_own() -> None:
    assert PLANS.is_file()
    assert PLANS.parent == TESTS / "fixtures"


def test_no_test_reads_the_examples_folder() -> None:
    """A path into examples/ in test code (`ROOT / "examples"`, "examples/plans.yaml")
    would make the suite depend on a file users are told to edit."""
    readers = [
        f"{path.relative_to(ROOT)}: {value!r}"
        for path in sorted(TESTS.rglob("*.py"))
        if path != Path(__file__)
        for value in _strings(path)
        if value.strip("/") == "examples" or value.startswith("examples/")
    ]
    assert readers == []
