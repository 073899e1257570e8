"""Claim codes as a person sees them: generated, typed back in, checked, hashed. No database."""

from __future__ import annotations

import hashlib
import random
import re

import pytest

from billfold.claims import codes

GROUPED = re.compile(r"^[A-Z0-9]{4}(-[A-Z0-9]{4}){4}$")
AMBIGUOUS = "0O1IL"


def test_the_alphabet_leaves_out_characters_people_confuse() -> None:
    assert len(set(codes.ALPHABET)) == len(codes.ALPHABET) == 30
    for char in AMBIGUOUS + "U":
        assert char not in codes.ALPHABET
    assert codes.ALPHABET.upper() == codes.ALPHABET


def test_generated_codes_are_grouped_and_use_only_the_alphabet() -> None:
    for _ in range(200):
        code = codes.generate()
        assert GROUPED.match(code), code
        compact = code.replace("-", "")
        assert len(compact) == 20
        assert set(compact) <= set(codes.ALPHABET), code


def test_a_generated_code_normalizes_to_its_compact_form() -> None:
    for _ in range(200):
        code = codes.generate()
        assert codes.normalize(code) == code.replace("-", "")


def test_normalize_forgives_case_spaces_and_missing_dashes() -> None:
    code = codes.generate()
    compact = code.replace("-", "")
    typed_forms = [
        code.lower(),
        compact,
        compact.lower(),
        code.replace("-", " "),
        f"  {code}  ",
        " ".join(compact),  # one space between every character
        code.replace("-", " - ").lower(),
        f"{code[:9]}{code[9:].replace('-', '')}",  # some dashes missing
        code.replace("-", "\t"),
    ]
    for typed in typed_forms:
        assert codes.normalize(typed) == compact, typed


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "-",
        "    ",
        "2345",
        "2345-6789-ABCD-EFGH-JKM",  # one character short
        "2345-6789-ABCD-EFGH-JKMNP",  # one character long
        "2345_6789_ABCD_EFGH_JKMN",  # underscores are not separators
    ],
)
def test_normalize_rejects_text_of_the_wrong_shape(typed: str) -> None:
    assert codes.normalize(typed) is None


def test_every_single_character_substitution_is_caught() -> None:
    """The check character turns any one-character typo into 'not a code', whichever
    position it hits and whichever wrong character was typed (an exhaustive sweep for a
    few codes, then random substitutions over many more)."""
    for _ in range(20):
        compact = codes.generate().replace("-", "")
        for position in range(len(compact)):
            for wrong in codes.ALPHABET:
                if wrong == compact[position]:
                    continue
                typo = compact[:position] + wrong + compact[position + 1 :]
                assert codes.normalize(typo) is None, (compact, position, wrong)

    rng = random.Random(20260601)
    for _ in range(20_000):
        code = codes.generate()
        compact = code.replace("-", "")
        position = rng.randrange(len(compact))
        wrong = rng.choice([c for c in codes.ALPHABET if c != compact[position]])
        typo = compact[:position] + wrong + compact[position + 1 :]
        assert codes.normalize(typo) is None, (code, position, wrong)
        # ... also when typed in lowercase and with its dashes.
        grouped = "-".join(typo[i : i + 4] for i in range(0, 20, 4))
        assert codes.normalize(grouped.lower()) is None


def test_ambiguous_characters_are_refused_rather_than_guessed() -> None:
    compact = codes.generate().replace("-", "")
    for position in range(len(compact)):
        for wrong in AMBIGUOUS + "U":
            typo = compact[:position] + wrong + compact[position + 1 :]
            assert codes.normalize(typo) is None
            assert codes.normalize(typo.lower()) is None


def test_adjacent_transpositions_of_different_characters_are_mostly_caught() -> None:
    """Luhn mod N catches swaps of neighbours for all but 2 of the 870 ordered pairs."""
    rng = random.Random(7)
    caught = total = 0
    for _ in range(2_000):
        compact = codes.generate().replace("-", "")
        position = rng.randrange(len(compact) - 1)
        if compact[position] == compact[position + 1]:
            continue
        swapped = (
            compact[:position] + compact[position + 1] + compact[position] + compact[position + 2 :]
        )
        total += 1
        caught += codes.normalize(swapped) is None
    assert caught / total > 0.97


def test_keyed_hash_depends_on_the_key_and_the_code() -> None:
    compact = codes.generate().replace("-", "")
    other = codes.generate().replace("-", "")
    key_a = b"a" * 40
    key_b = b"b" * 40
    hashed = codes.keyed_hash(key_a, compact)
    assert re.fullmatch(r"[0-9a-f]{64}", hashed)
    assert codes.keyed_hash(key_a, compact) == hashed  # deterministic
    assert codes.keyed_hash(key_b, compact) != hashed
    assert codes.keyed_hash(key_a, other) != hashed
    # The stored value reveals nothing of the code: it is not the code, nor a plain digest.
    assert compact.lower() not in hashed
    assert hashlib.sha256(compact.encode()).hexdigest() != hashed


def test_every_typed_form_hashes_the_same_once_normalized() -> None:
    code = codes.generate()
    key = b"k" * 40
    forms = [code, code.lower(), code.replace("-", ""), code.replace("-", " ")]
    hashes = set()
    for form in forms:
        normalized = codes.normalize(form)
        assert normalized is not None
        hashes.add(codes.keyed_hash(key, normalized))
    assert len(hashes) == 1


def test_a_thousand_generated_codes_are_distinct() -> None:
    generated = [codes.generate() for _ in range(1_000)]
    assert len(set(generated)) == 1_000
    # Distinct also in their random part, not just the check character.
    assert len({code.replace("-", "")[:-1] for code in generated}) == 1_000
