"""What a consume's overage costs in its wallet's unit: exact, rounded once with the
plans file's mode, whatever the thread's decimal context. Pure: no database."""

from __future__ import annotations

import decimal
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from billfold.catalog import plansfile
from billfold.catalog.catalog import Catalog
from billfold.catalog.quotas import Rounding, WalletOverage
from billfold.kit.money import MAX_MINOR
from billfold.metering.quotas.lookup import quota_of
from billfold.metering.quotas.wallet import (
    Payment,
    Price,
    cost_of,
    price,
    rate_of,
    reference_of,
)
from billfold.wallets.records import REFERENCE

usage = st.decimals(min_value=0, max_value=10**17, places=12, allow_nan=False)
rates = st.decimals(min_value=0, max_value=10**11, places=12, allow_nan=False)


@given(overage=usage, rate=rates)
def test_up_never_charges_less_and_never_a_whole_unit_more(overage: Decimal, rate: Decimal) -> None:
    exact = _exact(overage, rate)
    cost = cost_of(overage, rate, WalletOverage("credits", rate, Rounding.UP))
    assert exact <= cost < exact + 1 or (exact > MAX_MINOR and cost == MAX_MINOR)


@given(overage=usage, rate=rates)
def test_half_even_is_within_half_a_unit(overage: Decimal, rate: Decimal) -> None:
    cost = cost_of(overage, rate, WalletOverage("credits", rate, Rounding.HALF_EVEN))
    exact = _exact(overage, rate)
    assert abs(cost - exact) <= Decimal("0.5") or (exact > MAX_MINOR and cost == MAX_MINOR)


def test_the_cost_is_exact_under_a_narrow_decimal_context() -> None:
    overage = Decimal("123456789012345678.123456789012")
    rate = Decimal("1.000000000001")
    with decimal.localcontext(decimal.Context(prec=5)):
        cost = cost_of(overage, rate, WalletOverage("credits", rate, Rounding.UP))
    assert cost == 123456789012469135  # 123456789012469134.90... rounded up


def test_each_mode_rounds_the_half_its_way() -> None:
    half = Decimal("2.5")
    rate = Decimal(1)
    costs = [cost_of(half, rate, WalletOverage("credits", rate, mode)) for mode in Rounding]
    assert costs == [3, 3, 2]  # up, half_up, half_even


def test_a_cost_past_what_a_bigint_holds_is_capped() -> None:
    rate = Decimal(10**11)
    assert cost_of(Decimal(10**18), rate, WalletOverage("USD", rate)) == MAX_MINOR


def _catalog() -> Catalog:
    spec = plansfile.parse(
        """
version: 1
meters:
  ai_tokens: {event: ai.tokens, aggregation: sum, property: tokens}
  pages: {event: page.read, aggregation: sum, property: pages}
features:
  ai.tokens: {type: metered, meter: ai_tokens, wallet: {unit: credits, rate: "3"}}
  ai.cents: {type: metered, meter: ai_tokens, wallet: {unit: USD, rate: "3"}}
  pages.read: {type: metered, meter: pages, wallet: {unit: credits, rate: "3"}}
plans:
  free: {default: true, features: {}}
ai:
  models:
    o3: {prompt: 1, completion: 1, credits: "0.5"}
"""
    )
    return Catalog(
        revision=1, features=spec.features, plans={}, versions={}, meters=spec.meters, ai=spec.ai
    )


def test_ai_tokens_in_the_credit_unit_take_the_models_rate() -> None:
    catalog = _catalog()
    o3 = {"model": "o3"}
    assert rate_of(catalog, quota_of(catalog, "ai.tokens"), o3) == Decimal("0.5")
    assert rate_of(catalog, quota_of(catalog, "ai.tokens"), {"model": "gpt-4o"}) == 3
    assert rate_of(catalog, quota_of(catalog, "ai.tokens"), {}) == 3
    assert rate_of(catalog, quota_of(catalog, "ai.cents"), o3) == 3  # not the credit unit
    assert rate_of(catalog, quota_of(catalog, "pages.read"), o3) == 3  # not AI tokens


def test_the_price_is_the_models_rate_times_the_overage_rounded_once() -> None:
    catalog = _catalog()
    tokens = quota_of(catalog, "ai.tokens")
    assert price(catalog, tokens, {"model": "o3"}, Decimal(7)) == Price(
        "credits", Decimal("0.5"), 4
    )
    assert price(catalog, tokens, {}, Decimal(7)) == Price("credits", Decimal(3), 21)


def test_a_payment_stored_for_replays_reads_back_as_it_was() -> None:
    payment = Payment("credits", Decimal("0.5"), 4, 3, 0, "consume:ab", ("wsp:consume:ab:0",))
    assert Payment.from_json(payment.as_json()) == payment


def test_a_spend_reference_is_valid_whatever_the_key() -> None:
    for key in ("k", "x" * 255, "ünïcode key / with spaces"):
        assert REFERENCE.match(reference_of(key))
    assert reference_of("a") != reference_of("b")


def _exact(overage: Decimal, rate: Decimal) -> Decimal:
    with decimal.localcontext(decimal.Context(prec=80)):
        return overage * rate
