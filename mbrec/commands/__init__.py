"""One module per mbrec command; each defines `command`."""
