"""Query strings carry no text a backend cannot store: a NUL (or a lone surrogate) in a
query parameter, or in a cursor made up to decode to one, is refused with a 422 before
any query reaches the database (PostgreSQL would refuse it with a 500)."""

from __future__ import annotations

import base64

import pytest

from tests.conftest import Harness, assert_problem

pytestmark = pytest.mark.anyio

NUL_CURSOR = base64.urlsafe_b64encode(b"a\x00").decode("ascii").rstrip("=")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/audit/events", {"type": "x\x00"}),
        ("/v1/audit/events", {"customer": "a\x00"}),
        ("/v1/audit/events", {"cursor": NUL_CURSOR}),
        ("/v1/customers", {"cursor": NUL_CURSOR}),
        ("/v1/events", {"cursor": NUL_CURSOR}),
        ("/v1/customers/ada/usage", {"meter": "ai\x00"}),
        ("/v1/customers/ada/usage", {"meter": "ai", "group_by": "model\x00"}),
        ("/v1/customers/ada/plugins/notes", {"feature": "plugins\x00"}),
    ],
)
async def test_a_nul_in_a_query_parameter_is_refused(
    harness: Harness, path: str, params: dict[str, str]
) -> None:
    await harness.post("/v1/customers/ada/grants", {"feature": "rag.enabled", "value": True})
    assert_problem(await harness.get(path, params=params), 422, "invalid_input")
