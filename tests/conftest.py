import os

import pytest


def lab_requested(config) -> bool:
    """Lab VM tests boot QEMU for minutes on a 2-core machine: they run when asked for
    (`pytest -m lab`, or MBREC_LAB_TESTS=1, which `make test` and CI set)."""
    expr = (config.option.markexpr or "").replace(" ", "")
    return os.environ.get("MBREC_LAB_TESTS") == "1" or ("lab" in expr and "notlab" not in expr)


def pytest_collection_modifyitems(config, items):
    if lab_requested(config):
        return
    skip = pytest.mark.skip(reason="lab VM test: run with `pytest -m lab` or MBREC_LAB_TESTS=1 "
                                   "(boots QEMU; minutes under TCG)")
    for item in items:
        if item.get_closest_marker("lab"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def lab_ab_run(tmp_path_factory):
    """`mbrec lab run ab` (recording on a and b), booted once for every test that needs it."""
    from labutil import lab
    out = tmp_path_factory.mktemp("lab-ab") / "out"
    return lab("run", "ab", "-o", str(out)), out
