# Shared commands. `make test` is what .ci/run and the README run.
PYTHON ?= python3

.PHONY: install test test-fast bench fixtures goldens clean

install:
	$(PYTHON) -m pip install -q -e '.[test]'

# Everything, lab tests included where QEMU can run (they skip with the reason elsewhere).
test:
	$(PYTHON) -m pytest -q -ra

# Without the QEMU lab: seconds, for the edit-test loop.
test-fast:
	$(PYTHON) -m pytest -q -m "not lab"

bench:
	$(PYTHON) bench/trace_io.py

clean:
	rm -rf build dist *.egg-info .pytest_cache
