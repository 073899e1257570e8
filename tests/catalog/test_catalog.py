"""Plans as configuration through the API: diffs, immutable versions, archiving."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from tests.conftest import PLANS, Harness, assert_problem
from tests.factories import entitlements, grant

pytestmark = pytest.mark.anyio


YAML = {"Content-Type": "application/yaml"}


async def test_apply_stores_versions_only_for_changes(harness: Harness) -> None:
    text = PLANS.read_text()
    unchanged = await harness.post("/v1/catalog", content=text, headers={**harness.admin, **YAML})
    assert unchanged.json() == {"applied": False, "revision": 1, "changes": []}

    edited = text.replace("spaces.max: 50", "spaces.max: 60")
    preview = await harness.client.post(
        "/v1/catalog?dry_run=true", content=edited, headers={**harness.admin, **YAML}
    )
    assert preview.json()["changes"] == ["~ plan pro", "    v1 -> v2", "    spaces.max: 50 -> 60"]
    assert preview.json()["applied"] is False

    applied = await harness.client.post(
        "/v1/catalog", content=edited, headers={**harness.admin, **YAML}
    )
    assert applied.json()["applied"] is True
    assert applied.json()["revision"] == 2
    catalog = (await harness.get("/v1/catalog")).json()
    pro = next(plan for plan in catalog["plans"] if plan["key"] == "pro")
    assert (pro["version"], pro["features"]["spaces.max"]) == (2, 60)


async def test_existing_grants_keep_their_plan_version(harness: Harness) -> None:
    await grant(harness, "old", plan="pro")
    edited = PLANS.read_text().replace("spaces.max: 50", "spaces.max: 60")
    await harness.client.post("/v1/catalog", content=edited, headers={**harness.admin, **YAML})
    await grant(harness, "new", plan="pro")
    old = await entitlements(harness, "old")
    new = await entitlements(harness, "new")
    assert (old["spaces.max"]["value"], old["spaces.max"]["source"]["plan_version"]) == (50, 1)
    assert (new["spaces.max"]["value"], new["spaces.max"]["source"]["plan_version"]) == (60, 2)


async def test_a_feature_type_cannot_change(harness: Harness) -> None:
    document = {
        "version": 1,
        "features": {"rag.enabled": {"type": "limit"}},
        "plans": {"free": {"default": True, "features": {"rag.enabled": 5}}},
    }
    response = await harness.post("/v1/catalog", document)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_plans"
    assert response.json()["errors"][0]["detail"].startswith(
        "features.rag.enabled.type: cannot change from boolean to limit"
    )


async def test_json_documents_are_accepted_and_validated(harness: Harness) -> None:
    response = await harness.post(
        "/v1/catalog",
        {"version": 1, "features": {"x.y": {"type": "limit"}}, "plans": {"p": {"features": {}}}},
    )
    assert response.status_code == 200, response.text
    assert "+ feature x.y" in response.json()["changes"]
    assert "- plan pro (archived)" in response.json()["changes"]
    bad = await harness.post("/v1/catalog", {"version": 2})
    assert bad.status_code == 422
    assert {"detail": "version: expected 1"} in bad.json()["errors"]


async def test_parallel_applies_store_one_new_version(harness: Harness) -> None:
    edited = PLANS.read_text().replace("spaces.max: 50", "spaces.max: 70")
    responses = await asyncio.gather(
        *(
            harness.client.post("/v1/catalog", content=edited, headers={**harness.admin, **YAML})
            for _ in range(6)
        )
    )
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
    assert sorted(r.json()["applied"] for r in responses) == [False] * 5 + [True]
    catalog = (await harness.get("/v1/catalog")).json()
    pro = next(plan for plan in catalog["plans"] if plan["key"] == "pro")
    assert (catalog["revision"], pro["version"]) == (2, 2)


def without_metering(text: str) -> str:
    """The plans file without its meters: no metered feature and no values of it, no
    feature that keeps its count in a meter, and no usage prices."""
    document = yaml.safe_load(text)
    del document["meters"]
    metered = {key for key, f in document["features"].items() if f["type"] == "metered"}
    for key in metered:
        del document["features"][key]
    for feature in document["features"].values():
        feature.pop("meter", None)
    for plan in document["plans"].values():
        for key in metered:
            plan["features"].pop(key, None)
        for price in plan.get("prices", ()):
            price.pop("usage", None)
    return str(yaml.safe_dump(document, sort_keys=False))


async def test_meters_are_diffed_applied_and_archived(harness: Harness) -> None:
    text = PLANS.read_text()
    catalog = (await harness.get("/v1/catalog")).json()
    assert [(m["key"], m["aggregation"], m["property"]) for m in catalog["meters"]] == [
        ("ai_tokens", "sum", "tokens"),
        ("spaces", "count", None),
    ]
    edited = text.replace("group_by: [model, workflow]", "group_by: [model]")
    applied = await harness.client.post(
        "/v1/catalog", content=edited, headers={**harness.admin, **YAML}
    )
    assert applied.json()["changes"] == [
        "~ meter ai_tokens",
        '    group_by: ["model", "workflow"] -> ["model"]',
    ]
    meters = (await harness.get("/v1/catalog")).json()["meters"]
    assert meters[0]["group_by"] == ["model"]
    events = (await harness.get("/v1/audit/events", params={"type": "CatalogApplied"})).json()
    assert events["events"][-1]["data"]["changes"][0] == "~ meter ai_tokens"

    removed = without_metering(edited)
    archived = await harness.client.post(
        "/v1/catalog", content=removed, headers={**harness.admin, **YAML}
    )
    assert "- meter ai_tokens (archived)" in archived.json()["changes"], archived.text
    assert "- meter spaces (archived)" in archived.json()["changes"]
    assert "- feature ai.tokens (archived)" in archived.json()["changes"]
    gone = await harness.get("/v1/customers/ada/usage", params={"meter": "ai_tokens"})
    assert gone.status_code == 404
    restored = await harness.client.post(
        "/v1/catalog", content=text, headers={**harness.admin, **YAML}
    )
    assert "+ meter ai_tokens" in restored.json()["changes"]
    assert (await harness.get("/v1/customers/ada/usage", params={"meter": "ai_tokens"})).is_success


async def test_removing_a_setting_of_a_feature_is_a_change(harness: Harness) -> None:
    """Taking `meter: spaces` off spaces.max must be diffed and applied, not ignored."""
    text = PLANS.read_text()
    line = "    meter: spaces   # check without `current`: Billfold counts created minus deleted\n"
    assert line in text
    applied = await harness.client.post(
        "/v1/catalog", content=text.replace(line, ""), headers={**harness.admin, **YAML}
    )
    assert applied.json()["changes"] == ["~ feature spaces.max", '    meter: "spaces" -> null']
    check = await harness.post(
        "/v1/entitlements/check", {"customer": "ada", "feature": "spaces.max"}
    )
    assert check.status_code == 422  # no gauge any more: `current` is required again


async def test_a_plan_not_for_sale_is_shown_and_changes_in_place(harness: Harness) -> None:
    catalog = (await harness.get("/v1/catalog")).json()
    for_sale = {plan["key"]: plan["for_sale"] for plan in catalog["plans"]}
    assert for_sale == {"beta_tester": False, "free": True, "pro": True, "studio": True}

    edited = PLANS.read_text().replace("    for_sale: false", "    for_sale: true")
    applied = await harness.post("/v1/catalog", content=edited, headers={**harness.admin, **YAML})
    assert applied.json()["changes"] == ["~ plan beta_tester", "    for_sale: False -> True"]
    catalog = (await harness.get("/v1/catalog")).json()
    beta = next(plan for plan in catalog["plans"] if plan["key"] == "beta_tester")
    assert (beta["for_sale"], beta["version"]) == (True, 1)  # a setting, not a new version


async def test_for_sale_is_true_or_false(harness: Harness) -> None:
    edited = PLANS.read_text().replace("    for_sale: false", '    for_sale: "no"')
    refused = await harness.post("/v1/catalog", content=edited, headers={**harness.admin, **YAML})
    assert refused.status_code == 422, refused.text
    assert {"detail": "plans.beta_tester.for_sale: expected true or false"} in refused.json()[
        "errors"
    ]


# Documents the server cannot read are refused as problems, never a 500.

JSON_TYPE = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("raw", "headers", "status", "code", "says"),
    [
        (b'{"version": 1, "features": {"\xff": {}}}', JSON_TYPE, 400, "malformed_json", "UTF-8"),
        (b"version: 1\nfeatures:\n  x\xff: {}\n", YAML, 422, "invalid_plans", "UTF-8"),
        (
            b'{"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
            JSON_TYPE,
            400,
            "malformed_json",
            "nested",
        ),
        (b"a: " + b"[" * 10_000 + b"]" * 10_000 + b"\n", YAML, 422, "invalid_plans", "nested"),
        (
            b"a:\n" + b"".join(b"  " * i + b"- \n" for i in range(1, 400)),
            YAML,
            422,
            "invalid_plans",
            "nested",
        ),
        (
            b'{"version": 1, "features": {"\\ud800": {"type": "boolean"}}}',
            JSON_TYPE,
            422,
            "invalid_input",
            "surrogate",
        ),
        (
            b'version: 1\nfeatures:\n  "\\ud800": {type: boolean}\n',
            YAML,
            422,
            "invalid_plans",
            "surrogate",
        ),
        (b'version: 1\nfeatures:\n  "a\\0": {type: boolean}\n', YAML, 422, "invalid_plans", "NUL"),
        (b'{"version": 1, "version": 1}', JSON_TYPE, 400, "malformed_json", "twice"),
        (b"version: 1\n", {"Content-Type": "text/plain"}, 415, "unsupported_media_type", "yaml"),
    ],
)
async def test_unreadable_documents_are_refused(
    harness: Harness, raw: bytes, headers: dict[str, str], status: int, code: str, says: str
) -> None:
    response = await harness.client.post(
        "/v1/catalog", content=raw, headers={**harness.admin, **headers}
    )
    body = assert_problem(response, status, code)
    assert says in json.dumps(body), body
    assert (await harness.get("/v1/catalog")).json()["revision"] == 1
