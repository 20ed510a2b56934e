"""mbrec: record kernel TCP/IP events on every host, analyse them offline."""

__version__ = "0.2.0"
