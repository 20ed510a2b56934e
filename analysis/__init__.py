"""Offline analysis of mbrec traces (installed as mbrec.analysis): pure functions on numpy arrays."""
