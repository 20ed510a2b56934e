"""One host's whole analysis: packet table, copies, waits, L_APP and the named latency samples."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mbrec.analysis import app as app_mod
from mbrec.analysis.coverage import ABSENT, coverage
from mbrec.analysis.latency import samples
from mbrec.analysis.packets import FlowTable, PacketTable, packet_table, prepare


@dataclass
class HostResult:
    host: str
    path: str
    boot_id: str
    table: PacketTable
    samples: dict             # name, flow, t, value, row (see analysis.latency.samples)
    negative: int             # latency samples dropped because end < start (never averaged)
    copies_exact: float       # share of copy pieces placed by read records (1.0 = all exact)
    events: dict = field(default_factory=dict)   # schema -> count
    lost: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    clean: bool = True
    flow_ids: dict = field(default_factory=dict)  # schema -> (flow, local endpoint) per event
    coverage: dict | None = None  # what the probe set splits (analysis/coverage.py)


def analyze_host(trace) -> HostResult:
    """Everything one host's trace tells on its own (no other host, no clock alignment)."""
    prep = prepare(trace.events)
    events = prep.events  # the same records, read column by column
    table = packet_table(trace, prep)
    pieces = app_mod.copy_pieces(events, prep)
    app_mod.attach_copies(table, pieces)
    app = app_mod.app_latency(table, pieces)
    sndbuf = app_mod.send_buffer_wait(table, events, prep)
    rcvq = app_mod.receive_queue_wait(table, events, prep)
    header = trace.header or {}
    cov = coverage(header)
    s, neg = samples(table, app, sndbuf, rcvq, stack=cov is not None and
                     cov["latencies"]["L_STACK_2"]["status"] != ABSENT)
    exact = float(pieces["exact"].mean()) if len(pieces["exact"]) else 1.0
    return HostResult(host=str(header.get("host", "?")), path=trace.path,
                      boot_id=str(header.get("boot_id", "")), table=table, samples=s,
                      negative=neg, copies_exact=exact,
                      events={k: int(len(v)) for k, v in trace.events.items()},
                      lost=dict(trace.lost or {}), warnings=list(trace.warnings),
                      clean=trace.clean, flow_ids=prep.ids, coverage=cov)


@dataclass
class HostSummary:
    """What the report says of one host: from its whole analysis (analysis.report.summarize)
    or merged from its partitions' (analysis.pipeline.merge_host)."""

    host: str
    path: str
    boot_id: str
    clean: bool
    flows: FlowTable
    sent: np.ndarray            # per flow: packets sent, received, retransmitted
    received: np.ndarray
    retransmitted: np.ndarray
    duplicates: int             # received skbs whose first byte an earlier one carried
    latencies: dict             # name -> statistics (ns)
    flow_latencies: list | None  # per flow: name -> statistics, when asked for (--per-flow)
    negative: int
    copies_exact: float
    events: dict = field(default_factory=dict)
    lost: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    coverage: dict | None = None  # what the probe set splits (analysis/coverage.py)
