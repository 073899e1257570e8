"""Fixtures the metering tests share."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

import pytest

from billfold.metering.deps import Metering
from tests.conftest import Harness, new_harness


@pytest.fixture
async def streaming(database_url: str, nats_url: str) -> AsyncIterator[Harness]:
    """A harness whose usage goes through a NATS stream of its own (removed after)."""
    stream = f"BILLFOLD_TEST_{secrets.token_hex(4).upper()}"
    built = await new_harness(database_url, ingest=nats_url, ingest_stream=stream)
    try:
        yield built
    finally:
        await built.app.state.runtime.collaborators[Metering].publisher.close()
        await built.client.aclose()
        await built.database.dispose()
        import nats  # an optional extra: only the tests that take this fixture need it

        client = await nats.connect(nats_url)
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):  # none was made
                await client.jetstream().delete_stream(stream)
        finally:
            await client.close()
