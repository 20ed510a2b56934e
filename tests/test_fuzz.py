"""The trace fuzzer, bounded to seconds (the long run is `make fuzz`, tests/fuzz_long.py):
structure-aware cases with valid checksums and byte-level damage of real files, through
`mbrec info`, `replay` and `analyze`; nothing may end in an internal error."""

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tracecraft as tc
import tracefuzz

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                      HealthCheck.too_slow])
WORK = tempfile.mkdtemp(prefix="mbrec-fuzz-test-")


def case_file(data: bytes) -> str:
    path = os.path.join(WORK, "case.mbrec")
    with open(path, "wb") as f:
        f.write(data)
    return path


@settings(max_examples=150, **SETTINGS)
@given(st.randoms(use_true_random=False))
def test_structure_aware_cases_never_escape(rng):
    assert tracefuzz.run_case(case_file(tracefuzz.structured_case(rng))) == []


@settings(max_examples=100, **SETTINGS)
@given(st.randoms(use_true_random=False))
def test_byte_level_cases_never_escape(rng):
    assert tracefuzz.run_case(case_file(tracefuzz.byte_case(rng, WORK))) == []


@settings(max_examples=25, **SETTINGS)
@given(st.randoms(use_true_random=False), st.booleans())
def test_analyze_on_fuzzed_traces_never_escapes(rng, two_hosts):
    data = (tracefuzz.structured_case(rng) if rng.random() < 0.7
            else tracefuzz.byte_case(rng, WORK))
    other = tracefuzz.second_host(WORK) if two_hosts else None
    assert tracefuzz.run_case(case_file(data), analyze=True, with_host=other) == []


scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                    st.floats(), st.text(max_size=8), st.binary(max_size=8))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.one_of(st.text(max_size=4), st.integers(0, 9)),
                                        inner, max_size=3), max_leaves=8)


@settings(max_examples=120, **SETTINGS)
@given(st.sampled_from(["header", "schema", "field", "events", "clock", "lost", "trailer",
                        "note"]), st.data())
def test_any_value_in_any_field_of_any_object(where, data):
    """Hypothesis's own values (shrinkable) put into one field of one object."""
    frames = tc.good_frames(n_frames=2, per_frame=10)
    header = frames[0][0]
    targets = {
        "header": header,
        "schema": header["schemas"][data.draw(st.integers(0, len(header["schemas"]) - 1))],
        "events": frames[1][0], "clock": frames[0][1], "lost": frames[-2][0],
        "trailer": frames[-1][-1], "note": frames[-2][1],
    }
    if where == "field":
        schema = header["schemas"][0]
        field = schema["fields"][data.draw(st.integers(0, len(schema["fields"]) - 1))]
        field[data.draw(st.integers(0, 3))] = data.draw(values)
    else:
        obj = targets[where]
        key = data.draw(st.sampled_from(sorted(obj) + ["extra"]))
        obj[key] = data.draw(values)
    try:
        raw = tc.assemble(frames)
    except (TypeError, ValueError, OverflowError):  # not packable: not a file anyone can write
        return
    assert tracefuzz.run_case(case_file(raw)) == []
