# Shared commands. The README's two commands are `make demo` and `make check`; .ci/run runs
# `make check`. Both install what they need first (as root: apt-get and pip).
PYTHON ?= python3
# chromium: the report.html browser test; python3-bpfcc and linux-headers-amd64 (any Debian
# kernel's: BCC compiles its helpers against a header tree, mbrec reads kernel structs at BTF
# offsets), apache2, ab and iperf3: native recording on this machine's kernel
# (tests/test_native_record.py, make bench-native); openssh-server: the sshd that the fleet tests
# log in to (tests/test_fleet.py).
APT_PACKAGES = qemu-system-x86 debootstrap e2fsprogs gcc libc6-dev make ca-certificates \
	chromium chromium-driver fonts-liberation \
	python3-bpfcc linux-headers-amd64 iproute2 apache2 apache2-utils iperf3 openssh-server bpftool
DEMO_DIR ?= out/demo
# mbrec as this Python runs it: no PATH or sudo's secure_path needed
MBREC ?= $(PYTHON) -m mbrec

.PHONY: setup demo check check-kernels lint test test-fast fuzz bench bench-large bench-scale bench-lab bench-native fixtures goldens clean

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
# a known delay on the wire) recorded in the lab VM with both probe groups (packets: the
# per-layer latencies and L_NET; flows: the 16 flow metrics), then analysed. As root (make
# setup installs packages): `make demo` in a root shell, `sudo make demo` otherwise.
demo: setup
	$(MBREC) lab run ab -o $(DEMO_DIR) --force --record-args "--probes packets,flows"
	$(MBREC) analyze $(DEMO_DIR)/*.mbrec -o $(DEMO_DIR)/analysis --force

# Everything, the lab VM tests included (they skip with the reason where QEMU cannot run).
check: setup lint test

# ruff (ruff.toml: a small rule set of likely bugs) and mypy (mypy.ini) on mbrec/ and analysis/.
lint:
	$(PYTHON) -m ruff check .
	PYTHON=$(PYTHON) .ci/typecheck

test:
	MBREC_LAB_TESTS=1 $(PYTHON) -m pytest -q -ra

# The kernel matrix in full (docs/kernel-matrix.md): the ab scenario recorded and analysed on every lab
# suite's kernel (bookworm 6.1, trixie 6.12, sid 7.x) with fentry and with kprobes, the IPv6
# scenarios, and record --check in each; builds the images it lacks (minutes each).
check-kernels: setup
	MBREC_LAB_TESTS=1 MBREC_LAB_SUITES=bookworm,trixie,sid MBREC_LAB_KPROBE_SUITES=bookworm,trixie,sid \
		$(PYTHON) -m pytest -q -ra tests/lab/test_kernel_matrix_lab.py tests/lab/test_ipv6_lab.py

# Without the QEMU lab: seconds, for the edit-test loop.
test-fast:
	$(PYTHON) -m pytest -q -m "not lab"

# The trace fuzzer's long run (tests/fuzz_long.py; its figures are in docs/robustness.md):
# structure-aware and byte-level cases through info, replay and analyze, about 25 minutes.
FUZZ_CASES ?= 100000
fuzz:
	$(PYTHON) tests/fuzz_long.py --cases $(FUZZ_CASES)

# Benchmarks (docs/performance.md has the results and the machine): `make bench` runs the
# host-native ones (trace I/O, analyzer against a dictionary matcher, clock alignment, Perfetto
# export and report.html; minutes);
# `make bench-large` the analyzer on 50 M events (about 14 GB of memory); `make bench-lab` (as root)
# the recording overhead on ab and iperf3 in one lab VM boot: no recording, mbrec, mbrec
# --probes flows and the MicroBPF-style baseline, interleaved (about 25 minutes under TCG).
# The native drain benchmark needs BCC and kernel headers on the host: see bench/drain.py.
BENCH_DIR ?= out/bench
bench:
	$(PYTHON) bench/trace_io.py --events 2000000 --real fixtures/ab/a.mbrec fixtures/two-vm/a.mbrec
	$(PYTHON) bench/analyze.py --copies 158 --repeat 3
	$(PYTHON) bench/align.py
	$(PYTHON) bench/export.py

bench-large:
	$(PYTHON) bench/analyze.py --copies 4000 --large

# The partitioned analysis at scale: two hosts, 200 M events (generated a slice at a time),
# analysed serially, in 2 local processes and on a 2-worker Dask LocalCluster, L_NET included;
# about 25 GB of spill space in $TMPDIR and an hour.
bench-scale:
	$(PYTHON) bench/scale.py --events 200e6 --modes serial,jobs2,dask2

bench-lab: setup
	$(MBREC) lab run -o $(BENCH_DIR)/overhead --force --timeout 3600 -- sh /mnt/src/bench/overhead.sh 10000 4 10
	$(PYTHON) bench/overhead_report.py $(BENCH_DIR)/overhead/overhead.jsonl

# Recording overhead on this machine's real CPUs (root, a few minutes): ab and iperf3 through the
# native namespace testbed with no recording, mbrec --attach tracepoint (packets and flows, and
# packets only) and the MicroBPF-style baseline on the same tracepoints, interleaved and rotated.
bench-native: setup
	rm -rf $(BENCH_DIR)/native
	$(PYTHON) bench/native_overhead.py -o $(BENCH_DIR)/native
	$(PYTHON) bench/overhead_report.py $(BENCH_DIR)/native/overhead.jsonl

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
	$(MBREC) lab run $* -o fixtures/$* --record-args "$(or $(FIXTURE_RECORD_ARGS_$*),$(FIXTURE_RECORD_ARGS))"

# The analysis of every fixture as the regression tests run it; review `git diff fixtures/`.
goldens:
	@for d in fixtures/*/; do \
		[ -f $$d/ground_truth.json ] || continue; \
		echo "golden $$d"; \
		(cd $$d && $(MBREC) analyze $$(ls *.mbrec) --json --no-plots --quiet > golden-report.json) || exit 1; \
	done
