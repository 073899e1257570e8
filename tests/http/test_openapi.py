"""The OpenAPI document says what the server does: every `$ref` resolves, component names
are clean, each operation has a hand-chosen id, and errors are documented as the
problem+json the server sends."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute

from billfold.app import create_app
from billfold.http.openapi import PROBLEM, PROBLEM_MEDIA_TYPE
from tests.conftest import Harness, make_settings

pytestmark = pytest.mark.anyio

OPERATION_ID = re.compile(r"^[a-z][A-Za-z]*$")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    # Building the document touches no database.
    return create_app(make_settings("sqlite:///unused.db")).openapi()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method.upper(), path, operation


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_every_ref_resolves(document: dict[str, Any]) -> None:
    found = set(refs(document))
    assert "#/components/schemas/ModelUsageIn" in found  # the AI usage summary's models
    for ref in found:
        assert ref.startswith("#/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            assert isinstance(node, dict), ref
            assert part in node, f"{ref} does not resolve"
            node = node[part]


def test_no_schema_keeps_definitions_of_its_own(document: dict[str, Any]) -> None:
    # `$defs` inside a body schema is where ModelUsageIn used to hide, unresolvable.
    assert "$defs" not in str(document)


def test_component_names_are_clean(document: dict[str, Any]) -> None:
    names = list(document["components"]["schemas"])
    assert [name for name in names if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name)] == []
    assert "QuotaUsageOut" in names
    assert "UsageOut" in names


def test_every_operation_has_a_hand_chosen_unique_id(document: dict[str, Any]) -> None:
    app = create_app(make_settings("sqlite:///unused.db"))
    routes = [route for route in app.routes if isinstance(route, APIRoute)]
    routes += [r for router in app.router.routes for r in getattr(router, "routes", [])]
    unnamed = [route.path for route in routes if route.include_in_schema and not route.operation_id]
    assert unnamed == [], "give each route operation_id= in its decorator"
    ids = [operation.get("operationId", "") for _m, _p, operation in operations(document)]
    assert [i for i in ids if not OPERATION_ID.match(i)] == []
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert "checkEntitlement" in ids


def test_errors_are_documented_as_problems(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    assert set(schemas[PROBLEM]["required"]) == {"type", "title", "status", "detail", "code"}
    for method, path, operation in operations(document):
        responses = operation["responses"]
        where = f"{method} {path}"
        assert "500" in responses, where
        if "security" in operation:
            assert {"401", "403"} <= set(responses), where
        if "requestBody" in operation:
            assert {"400", "413", "415", "422"} <= set(responses), where
        if operation.get("parameters"):
            assert "422" in responses, where
        for status, response in responses.items():
            if int(status) >= 400:
                assert list(response["content"]) == [PROBLEM_MEDIA_TYPE], (where, status)
                schema = response["content"][PROBLEM_MEDIA_TYPE]["schema"]
                assert schema == {"$ref": f"#/components/schemas/{PROBLEM}"}, (where, status)


def test_put_customer_documents_created_and_updated(document: dict[str, Any]) -> None:
    responses = document["paths"]["/v1/customers/{external_id}"]["put"]["responses"]
    for status in ("200", "201"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/CustomerOut"}


def test_events_body_has_its_real_schema(document: dict[str, Any]) -> None:
    content = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    single = document["components"]["schemas"]["UsageEventIn"]
    assert {"idempotency_key", "customer", "type"} <= set(single["required"])
    assert content["application/json"]["schema"] != {"type": "object"}
    assert "#/components/schemas/UsageEventIn" in set(refs(content["application/json"]))
    cloud = content["application/cloudevents+json"]["schema"]
    assert cloud == {"$ref": "#/components/schemas/CloudEventIn"}
    batch = content["application/cloudevents-batch+json"]["schema"]
    assert batch["type"] == "array"


async def test_the_server_answers_the_documented_problem(harness: Harness) -> None:
    """What the document promises for a 404 and a 422 is what the server sends."""
    document = harness.app.openapi()
    responses = document["paths"]["/v1/customers/{external_id}"]["get"]["responses"]
    assert "404" in responses
    missing = await harness.get("/v1/customers/nobody")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    required = set(document["components"]["schemas"][PROBLEM]["required"])
    assert required <= set(missing.json())
    invalid = await harness.get("/v1/customers", params={"limit": "0"})
    assert invalid.status_code == 422
    assert required <= set(invalid.json())
