"""Recording on many hosts over ssh: inventory, transport, orchestration, run manifest."""
