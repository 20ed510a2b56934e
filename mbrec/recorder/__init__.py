"""The recorder behind `mbrec record`: probe resolution, the BPF program, bulk ring drain."""
