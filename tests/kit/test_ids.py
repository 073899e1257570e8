"""Ids: prefixed, URL-safe, and random in every character (or, for usage events, after the
instant)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from billfold.kit.ids import ID_PATTERN, new_id, new_ids, new_sorted_ids


def test_an_id_is_its_prefix_and_26_base32_letters() -> None:
    assert ID_PATTERN.match(new_id("use"))
    batch = new_ids("use", 1_000)
    assert len(batch) == 1_000
    assert all(ID_PATTERN.match(one) for one in batch)
    assert len(set(batch)) == 1_000


def test_every_letter_of_the_alphabet_is_used_about_equally() -> None:
    letters = Counter("".join(one[4:] for one in new_ids("use", 4_000)))  # 104,000 letters
    assert set(letters) == set("abcdefghijklmnopqrstuvwxyz234567")
    # Uniform: 3,250 each; a 5-sigma band is about +-280.
    assert all(2_900 < count < 3_600 for count in letters.values()), letters


def test_sorted_ids_sort_by_their_instant_then_at_random() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    later = start + timedelta(milliseconds=1)
    first, second = new_sorted_ids("use", 500, start), new_sorted_ids("use", 500, later)
    assert all(ID_PATTERN.match(one) for one in first + second)
    assert len(set(first + second)) == 1_000
    assert max(first) < min(second)  # every id of a later millisecond sorts after
    assert len({one[:14] for one in first}) == 1  # the same instant, the same head
    years_on = new_sorted_ids("use", 1, datetime(9999, 12, 31, tzinfo=UTC))[0]
    assert years_on > max(second)
