"""Schemathesis against the OpenAPI document, on the real server, on both backends.

A bounded, reproducible run: a fixed number of examples per operation, derandomized, both
positive and negative data. Every answer must be no 5xx, a documented status, of the
documented content type, and match its documented schema. Failures are collected over
every operation and reported together, one line per distinct failure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from billfold.kit import eventlog
from billfold.kit.db import Database
from tests import factories
from tests.conftest import PLANS, SECRET_KEY
from tests.http.served import served

EXAMPLES = 10  # per operation and generation mode: 20 per operation
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # no shrinking
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def server(database_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """The served API and the admin key of a tenant of its own."""

    async def new_tenant() -> str:
        database = Database(database_url, pool_size=1)
        database.key_event_log(eventlog.chain_key(SECRET_KEY))  # as the server keys it
        try:
            _tenant_id, token = await factories.tenant(database, datetime.now(UTC), PLANS)
        finally:
            await database.dispose()
        return token

    token = asyncio.run(new_tenant())
    with served(database_url) as base:
        yield base, {"Authorization": f"Bearer {token}"}


def fuzz(base: str, headers: dict[str, str]) -> list[str]:
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    failures: dict[str, str] = {}  # one line per distinct failure, with an example

    def record(case: Any, failure: BaseException) -> None:
        title = getattr(failure, "title", type(failure).__name__)
        message = str(getattr(failure, "message", failure)).strip().splitlines()[:1]
        where = f"{case.operation.method.upper()} {case.operation.path}"
        failures.setdefault(f"{where}: {title} {' '.join(message)}", _request_of(case))

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in GenerationMode:

            @SETTINGS
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                try:
                    case.call_and_validate(base_url=base, headers=headers, checks=CHECKS)
                except BaseExceptionGroup as group:  # failed checks
                    for failure in group.exceptions:
                        record(case, failure)
                except Exception as error:  # one failed check, or no answer at all
                    record(case, error)

            # Unsatisfiable: nothing of this operation can be made invalid (no parameters).
            with contextlib.suppress(hypothesis.errors.Unsatisfiable):
                run()
    return [f"{key}\n    e.g. {example}" for key, example in sorted(failures.items())]


def _request_of(case: Any) -> str:
    parts = [f"path={case.path_parameters}" if case.path_parameters else ""]
    parts.append(f"query={case.query}" if case.query else "")
    body = getattr(case, "body", None)
    if body is not None and type(body).__name__ != "NotSet":
        parts.append(f"body={body!r}"[:300])
    parts.append(f"media_type={case.media_type}" if case.media_type else "")
    return " ".join(part for part in parts if part)


def test_every_operation_answers_as_documented(server: tuple[str, dict[str, str]]) -> None:
    base, headers = server
    failures = fuzz(base, headers)
    assert not failures, f"{len(failures)} distinct failures:\n" + "\n".join(failures)
