import math

from billfold.kit.text import json_faults, text_fault


def test_plain_text_is_storable() -> None:
    assert text_fault("naïve café ✓ 𝄞") is None


def test_a_nul_or_a_lone_surrogate_is_named() -> None:
    assert text_fault("a\x00b") == "contains a NUL character (\\u0000)"
    fault = text_fault("\ud800")
    assert fault is not None
    assert "surrogate" in fault


def test_json_faults_point_at_every_bad_place() -> None:
    value = {
        "ok": [1, 2.5, "x"],
        "a": "x\x00",
        "b": [math.nan, "\udfff"],
        "\ud801": 1,
        "c": math.inf,
    }
    paths = [path for path, _reason in json_faults(value)]
    assert paths == [("a",), ("b", 0), ("b", 1), ("\ud801",), ("c",)]
    assert list(json_faults({"fine": {"deep": [True, None, 0]}})) == []
