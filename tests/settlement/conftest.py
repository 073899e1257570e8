"""A harness in platform mode (the fee and the splits apply) beside the default one
(self-hosted)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.conftest import Harness, new_harness


@pytest.fixture
async def platform(backend: str, database_url: str) -> AsyncIterator[Harness]:
    built = await new_harness(database_url, mode="platform", enforcement="enforce")
    try:
        yield built
    finally:
        await built.client.aclose()
        await built.database.dispose()
