"""The golden comparison itself: it must catch what matters and forgive only float rounding."""

from golden import differences


def test_identical_results_have_no_differences():
    r = {"hosts": [{"name": "a", "count": 3, "p50": 1.25}], "ok": True}
    assert differences(r, r) == []


def test_counts_and_identities_must_match_exactly():
    e = {"count": 1000, "host": "a", "ok": True}
    assert differences({"count": 999, "host": "a", "ok": True}, e) == ["$.count: 999 != 1000"]
    assert differences({"count": 1000, "host": "b", "ok": True}, e) == ["$.host: 'b' != 'a'"]
    assert differences({"count": 1000, "host": "a", "ok": 1}, e) == ["$.ok: 1 != True"]


def test_floats_within_tolerance_pass_and_beyond_fail():
    assert differences({"x": 1.0 + 1e-9}, {"x": 1.0}) == []
    assert differences({"x": 1.001}, {"x": 1.0}) == ["$.x: 1.001 != 1.0"]


def test_structure_changes_are_reported_with_their_path():
    diffs = differences({"a": [1, 2], "new": 0}, {"a": [1, 2, 3], "gone": 1})
    assert "$.gone: missing" in diffs and "$.new: unexpected" in diffs
    assert "$.a: length 2 != 3" in diffs
