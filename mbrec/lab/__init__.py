"""The lab: a reproducible multi-host testbed on a stock Debian kernel in QEMU."""
