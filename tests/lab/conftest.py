"""Lab VM tests boot QEMU for minutes on a 2-core machine: they run when asked for (`pytest -m lab`, or
MBREC_LAB_TESTS=1), and skip with that reason in a plain `pytest` run."""

import os

import pytest


def _lab_requested(config) -> bool:
    expr = (config.option.markexpr or "").replace(" ", "")
    return os.environ.get("MBREC_LAB_TESTS") == "1" or ("lab" in expr and "notlab" not in expr)


def pytest_collection_modifyitems(config, items):
    if _lab_requested(config):
        return
    skip = pytest.mark.skip(reason="lab VM test: run with `pytest -m lab` (boots QEMU; minutes under TCG)")
    for item in items:
        if item.get_closest_marker("lab"):
            item.add_marker(skip)
