"""BPF C sources, shipped as package data (mbrec.bpf) and compiled by BCC at record time."""
