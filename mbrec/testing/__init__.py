"""Test support shipped with the package (as numpy.testing is): trace simulators with known
content and ground truth, reference implementations of what the kernel side computes, and the
reference the analysis' speed is measured against.

- synthetic: traces with made-up events written through the real writer;
- clientserver: a keep-alive client/server simulation with the true value of every latency;
- twohost: two hosts' wire events with a known clock relation and known one-way delays;
- kernel_view: the kernel's own view of TCP flows (ss, nstat) and how flow records must agree;
- sampling: the --sample decision of bpf/mbrec_hash.h in numpy, checked bit for bit;
- dict_matcher: MicroBPF's dictionary matching, the speed reference of bench/analyze.py.
"""
