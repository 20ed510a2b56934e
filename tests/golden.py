"""Comparing an analysis result with its committed golden copy.

Counts, identities and strings must match exactly; floating-point numbers within a relative
tolerance (the analysis is deterministic, so the tolerance only absorbs numpy/platform rounding).
"""

from __future__ import annotations

import math

FLOAT_RTOL = 1e-6
FLOAT_ATOL = 1e-9
# Which mbrec wrote a report (or recorded its traces) is provenance, not a result: a release
# must not invalidate every golden report.
PROVENANCE = frozenset({"mbrec_version"})


def differences(actual, expected, path: str = "$", rtol: float = FLOAT_RTOL,
                atol: float = FLOAT_ATOL) -> list[str]:
    """Every place where actual differs from expected, as 'path: actual != expected'."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: {type(actual).__name__} != object"]
        out = [f"{path}.{k}: missing" for k in expected if k not in actual]
        out += [f"{path}.{k}: unexpected" for k in actual if k not in expected]
        for k in expected:
            if k in actual and k not in PROVENANCE:
                out += differences(actual[k], expected[k], f"{path}.{k}", rtol, atol)
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            n = len(actual) if isinstance(actual, list) else type(actual).__name__
            return [f"{path}: length {n} != {len(expected)}"]
        out = []
        for i, (a, e) in enumerate(zip(actual, expected)):
            out += differences(a, e, f"{path}[{i}]", rtol, atol)
        return out
    if isinstance(expected, float) or (isinstance(actual, float) and
                                        isinstance(expected, int) and not isinstance(expected, bool)):
        if not isinstance(actual, (int, float)) or isinstance(actual, bool):
            return [f"{path}: {actual!r} != {expected!r}"]
        if math.isnan(expected) and math.isnan(actual):
            return []
        if not math.isclose(actual, expected, rel_tol=rtol, abs_tol=atol):
            return [f"{path}: {actual!r} != {expected!r}"]
        return []
    if actual != expected or type(actual) is not type(expected):
        return [f"{path}: {actual!r} != {expected!r}"]
    return []
