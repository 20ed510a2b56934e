# Shared commands. The README's two commands are `make demo` and `make check`; .ci/run runs
# `make check`. Both install what they need first (as root: apt-get and pip).
PYTHON ?= python3
APT_PACKAGES = qemu-system-x86 debootstrap e2fsprogs gcc libc6-dev make ca-certificates \
	chromium chromium-driver fonts-liberation openssh-server
DEMO_DIR ?= out/demo

.PHONY: setup demo check test test-fast bench bench-large bench-lab fixtures goldens clean

setup:
	@if [ "$$(id -u)" != 0 ]; then echo "make setup: run as root (it installs Debian packages)"; exit 1; fi
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "== installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing >/dev/null; \
	fi
	$(PYTHON) -m pip install -q --root-user-action=ignore -e '.[test]'

# The main job on its embedded default: MicroBPF's evaluation (Apache + ab -k -c 10, two hosts,
# a known delay on the wire) recorded in the lab VM, then analysed.
demo: setup
	rm -rf $(DEMO_DIR)
	mbrec lab run ab -o $(DEMO_DIR)
	mbrec analyze $(DEMO_DIR)/*.mbrec -o $(DEMO_DIR)/analysis

# Everything, the lab VM tests included (they skip with the reason where QEMU cannot run).
check: setup test

test:
	MBREC_LAB_TESTS=1 $(PYTHON) -m pytest -q -ra

# Without the QEMU lab: seconds, for the edit-test loop.
test-fast:
	$(PYTHON) -m pytest -q -m "not lab"

# Benchmarks (docs/performance.md has the results and the machine): `make bench` runs the
# host-native ones (trace I/O, analyzer against a dictionary matcher, clock alignment, Perfetto
# export and report.html; minutes);
# `make bench-large` the analyzer on 50 M events (about 14 GB of memory); `sudo make bench-lab`
# the recording overhead on ab and iperf3 in one lab VM boot: no recording, mbrec, mbrec
# --probes flows and the MicroBPF-style baseline, interleaved (about 25 minutes under TCG).
# The native drain benchmark needs BCC and kernel headers on the host: see bench/drain.py.
BENCH_DIR ?= out/bench
bench:
	$(PYTHON) bench/trace_io.py --events 2000000 --real fixtures/ab/a.mbrec fixtures/two-vm/a.mbrec
	$(PYTHON) bench/analyze.py --copies 150 --repeat 3
	$(PYTHON) bench/align.py
	$(PYTHON) bench/export.py

bench-large:
	$(PYTHON) bench/analyze.py --copies 4000 --large

bench-lab: setup
	rm -rf $(BENCH_DIR)/overhead
	mbrec lab run -o $(BENCH_DIR)/overhead --timeout 3600 -- sh /mnt/src/bench/overhead.sh 10000 4 10
	$(PYTHON) bench/overhead_report.py $(BENCH_DIR)/overhead/overhead.jsonl

clean:
	rm -rf build dist *.egg-info .pytest_cache

# Lab recordings for CI regression (fixtures/README.md): each scenario recorded on every host,
# then the golden reports. Needs root and QEMU; takes about 3 minutes a scenario under TCG.
FIXTURES = ab asym two-vm qdisc lossy rto bulk multi baseline latency
# The flows group where flow metrics are checked; packet sampling where transfers are bulky.
FIXTURE_RECORD_ARGS = --probes packets
FIXTURE_RECORD_ARGS_ab = --probes packets,flows
FIXTURE_RECORD_ARGS_lossy = --probes packets,flows --sample 2
FIXTURE_RECORD_ARGS_rto = --probes packets,flows --sample 1
FIXTURE_RECORD_ARGS_bulk = --probes packets,flows --sample 2

fixtures: $(FIXTURES:%=fixture-%) goldens

fixture-%:
	rm -rf fixtures/$*
	mbrec lab run $* -o fixtures/$* --record-args "$(or $(FIXTURE_RECORD_ARGS_$*),$(FIXTURE_RECORD_ARGS))"

# The analysis of every fixture as the regression tests run it; review `git diff fixtures/`.
goldens:
	@for d in fixtures/*/; do \
		[ -f $$d/ground_truth.json ] || continue; \
		echo "golden $$d"; \
		(cd $$d && mbrec analyze $$(ls *.mbrec) --json --no-plots --quiet > golden-report.json) || exit 1; \
	done
