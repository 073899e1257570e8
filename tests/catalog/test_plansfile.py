"""Reading a plans file: every problem with its path, in the document's order, and
never anything but a catalog or a list of problems."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from billfold.catalog import plansfile
from billfold.catalog.features import UNLIMITED
from billfold.catalog.plansfile import PlansFileError
from tests.conftest import PLANS


def errors_of(document: str) -> list[str]:
    with pytest.raises(PlansFileError) as caught:
        plansfile.parse(document)
    return caught.value.errors


def test_example_plans_are_the_sot_plans() -> None:
    spec = plansfile.load(PLANS)
    assert list(spec.plans) == ["free", "beta_tester", "pro", "studio"]
    assert spec.default_plan == "free"
    assert set(spec.features) == {
        "spaces.max",
        "share.enabled",
        "share.readonly_links.max",
        "collab.max_members_per_space",
        "rag.enabled",
        "devmode.enabled",
        "plugins",
        "ai.tokens",
    }
    # The analysis document's tokens_per_month, as a metered feature.
    assert {key: plan.features["ai.tokens"] for key, plan in spec.plans.items()} == {
        "free": 10_000,
        "beta_tester": 50_000,
        "pro": 100_000,
        "studio": UNLIMITED,
    }


def test_every_error_is_reported_with_its_path() -> None:
    errors = errors_of(
        """
version: 1
colour: blue
features:
  spaces.max: {type: limit}
  share.enabled: {type: boolean}
  plugins: {type: pattern}
  Bad-Key: {type: boolean}
  gauge: {type: counter}
plans:
  pro:
    features:
      spaces.max: lots
      share.enabled: "yes please"
      plugins: basic_*
      ghost: 1
  free: {default: true, features: {spaces.max: -1}}
  studio: {default: true, features: {spaces.max: true}}
"""
    )
    assert errors == [
        "colour: unknown key (expected one of version, meters, features, plans, ai, coupons)",
        "features.Bad-Key: feature keys are dotted lowercase words, e.g. spaces.max",
        "features.gauge.type: expected one of boolean, limit, pattern, metered",
        'plans.pro.features.spaces.max: expected an integer or "unlimited"',
        "plans.pro.features.share.enabled: expected true or false",
        'plans.pro.features.plugins: expected a list of glob patterns, e.g. ["basic_*"]',
        "plans.pro.features.ghost: unknown feature (declare it under features)",
        'plans.free.features.spaces.max: expected a non-negative integer or "unlimited"',
        'plans.studio.features.spaces.max: expected an integer or "unlimited"',
        "plans: only one plan may be the default, found free, studio",
    ]


def test_duplicate_keys_are_reported_beside_the_other_problems() -> None:
    duplicate = errors_of("version: 1\nfeatures: {}\nplans: {}\nplans: {}\n")
    assert duplicate == [
        "line 4, column 1: duplicate key 'plans'",
        "features: expected a mapping of feature keys to definitions",
        "plans: expected a mapping of plan keys to definitions",
    ]


def test_yaml_syntax_errors_are_reported_with_their_line() -> None:
    broken = errors_of("version: 1\nfeatures: [unclosed\n")
    assert broken[0].startswith("line ")


def test_meter_errors_are_reported_with_their_path() -> None:
    errors = errors_of(
        """
version: 1
meters:
  Tokens: {event: ai.tokens, aggregation: sum, property: tokens}
  no_property: {event: ai.tokens, aggregation: sum}
  counted: {event: ai.tokens, aggregation: count, property: tokens}
  odd: {event: "a b", aggregation: median, colour: red}
  filtered: {event: x, aggregation: count, filters: {model: {like: gpt}}, group_by: [a, a]}
features:
  spaces.max: {type: limit}
plans:
  free: {features: {spaces.max: 1}}
"""
    )
    assert errors == [
        "meters.Tokens: meter keys are lowercase words, digits and _, e.g. ai_tokens",
        "meters.no_property.property: sum needs the property it reads",
        "meters.counted.property: count reads no property; remove it",
        # in the order the document lists them: colour comes after event and aggregation
        "meters.odd.event: expected an event type, e.g. ai.tokens",
        "meters.odd.aggregation: expected one of count, sum, max, unique_count, latest",
        "meters.odd.colour: unknown key (expected one of event, aggregation, property, "
        "filters, group_by, description, subtract, allow_negative)",
        "meters.filtered.filters.model: expected {equals: value} or {in: [values]}",
        "meters.filtered.group_by: expected up to 5 distinct property names",
    ]


def test_quota_and_gauge_errors_are_reported_with_their_path() -> None:
    errors = errors_of(
        """
version: 1
meters:
  peak: {event: x, aggregation: max, property: v}
  net: {event: space.created, subtract: space.deleted, aggregation: count}
  wrong: {event: a, subtract: b, aggregation: latest, property: v}
features:
  tokens.a: {type: metered}
  tokens.b: {type: metered, meter: peak, reset: fortnight, overage: maybe}
  tokens.c: {type: metered, meter: net}
  spaces.max: {type: limit, meter: peak}
  share.enabled: {type: boolean, meter: net}
plans:
  free: {features: {}}
"""
    )
    assert errors == [
        "meters.wrong.subtract: only count and sum meters can subtract",
        "features.tokens.a.meter: expected a meter declared under meters",
        "features.tokens.b.meter: a quota draws on a sum or count meter that never subtracts",
        "features.tokens.b.reset: expected one of day, week, month, year, never",
        "features.tokens.b.overage: expected true or false",
        "features.tokens.c.meter: a quota draws on a sum or count meter that never subtracts",
        "features.spaces.max.meter: expected a count or sum meter declared under meters",
        "features.share.enabled.meter: unknown key (expected one of type, description)",
    ]


def test_a_description_longer_than_its_column_is_a_problem_not_a_failed_apply() -> None:
    long = "x" * 501
    errors = errors_of(
        f"""
version: 1
features:
  spaces.max: {{type: limit, description: {long}}}
plans:
  free: {{description: {long}, features: {{spaces.max: 1}}}}
"""
    )
    assert errors == [
        "features.spaces.max.description: expected text of at most 500 characters",
        "plans.free.description: expected text of at most 500 characters",
    ]


def test_the_ai_section_and_plans_report_their_problems_with_paths() -> None:
    errors = errors_of(
        """
version: 1
features:
  spaces.max: {type: limit}
plans:
  free: {name: " ", colour: red, features: [spaces.max]}
ai:
  currency: usd
  models:
    gpt-4o: {prompt: 1.5, completion: "-2"}
    "bad model": {prompt: 1, completion: 1}
    o3: {prompt: 1}
"""
    )
    assert errors == [
        "plans.free.name: expected text of at most 200 characters",
        "plans.free.colour: unknown key"
        " (expected one of name, description, default, for_sale, features, prices)",
        "plans.free.features: expected a mapping of feature keys to values",
        "ai.currency: expected an ISO 4217 code, e.g. USD",
        'ai.models.gpt-4o.prompt: expected minor units per million tokens, e.g. 250 or "7.5"',
        'ai.models.gpt-4o.completion: expected a non-negative amount, e.g. 250 or "7.5"',
        "ai.models.bad model: expected a model name",
        "ai.models.o3: expected {prompt: <minor units>, completion: <minor units>}",
    ]


_SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.floats()


_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def _replace(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(document)
    copy[path[0]] = _replace(copy[path[0]], path[1:], value)
    return copy


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    return found


EXAMPLE_DOCUMENT = yaml.safe_load(PLANS.read_text())


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_any_document_is_a_catalog_or_a_list_of_problems(data: st.DataObject) -> None:
    """The example with one part replaced by anything: the parser answers with a catalog
    or with problems, each `path: message`; it never fails otherwise."""
    path = data.draw(st.sampled_from(_paths(EXAMPLE_DOCUMENT)))
    document = _replace(EXAMPLE_DOCUMENT, path, data.draw(_VALUES))
    outcome = _outcome(document)
    if isinstance(outcome, list):
        assert outcome
        assert all(": " in problem for problem in outcome), outcome
    else:
        assert outcome.plans


def _outcome(document: Any) -> plansfile.CatalogSpec | list[str]:
    """The catalog a document declares, or its problems."""
    try:
        return plansfile.validate(document)
    except PlansFileError as error:
        return error.errors


def test_a_quota_setting_left_null_takes_its_default() -> None:
    spec = plansfile.validate(
        {
            "version": 1,
            "meters": {"calls": {"event": "api.call", "aggregation": "count"}},
            "features": {
                "api.calls": {
                    "type": "metered",
                    "meter": "calls",
                    "reset": None,
                    "anchor": None,
                    "limit": None,
                }
            },
            "plans": {"free": {"name": None, "features": {"api.calls": 100}}},
        }
    )
    config = spec.features["api.calls"].config
    assert (config["reset"], config["anchor"], config["limit"]) == ("month", "calendar", "hard")
    assert spec.plans["free"].name == "free"


def test_a_key_that_is_not_text_is_an_unknown_key() -> None:
    document = {1: "x", "version": 1, "features": {"a.b": {"type": "boolean"}}, "plans": {"p": {}}}
    assert _outcome(document) == [
        "1: unknown key (expected one of version, meters, features, plans, ai, coupons)"
    ]
