"""Where bytes meet the application: copies and reads, L_APP, send-buffer and receive-queue waits.

Definitions (docs/report-format.md repeats them):

* copy piece: the bytes one ``skb_copy_datagram_iter`` call delivered. The pkt record carries
  the whole skb's range [S, E) (which may be several coalesced skbs); the read it belongs to is
  the first read record of the same stream at or after it, covering [a, b), so the copy
  delivered [max(S, a), min(E, b)). Without read records, the first copy of each byte range is
  taken to deliver everything not yet delivered ("approximate" in the report).
* L_TCP_2/L_TCP_4 (receive TCP layer): tcp_v4_rcv of an skb to the copy piece that delivered its
  first byte (stored as ts[:, 3] of the receive rows of the packet table).
* receive-queue wait: tcp_v4_rcv of an skb to the end of the read call (sock read record) that
  returned its last byte.
* send-buffer wait: an application write (sock write record, [a, b)) to the first
  tcp_transmit_skb of a range covering its last byte b - 1.
* L_APP: per flow, on the time line of copy pieces (bytes read) and first transmissions of new
  data (retransmissions and zero-length packets excluded, so a pure or delayed ACK never
  counts), each transmission that directly follows a read gives tcp_transmit_skb minus the time
  of that last read. Requests and responses of many segments are handled because only the turn
  from reading to sending counts. L_APP_2 on the server, L_APP_1 on the client.
"""

from __future__ import annotations

import numpy as np

from mbrec.events import PROBE_IDS
from mbrec.analysis.join import NONE, grouped_cummax_before, stab, stream_time_order
from mbrec.analysis.packets import FIN, SOCK_READ, SOCK_WRITE, SYN, PacketTable, Prepared

COPY = PROBE_IDS["skb_copy_datagram_iter"]
BIG = np.iinfo(np.int64).max


def copy_pieces(events: dict, prep: Prepared) -> dict:
    """Per copy event: stream, delivered range [c0, c1), time, and whether read records were used."""
    pkt = events.get("pkt")
    empty = {k: np.zeros(0, np.int64) for k in ("stream", "c0", "c1", "t", "flow")}
    empty["exact"] = np.zeros(0, bool)
    if pkt is None or len(pkt) == 0 or "pkt" not in prep.ids:
        return empty
    sel = np.nonzero(pkt["probe"] == COPY)[0]
    if len(sel) == 0:
        return empty
    stream = prep.pkt_stream[sel]
    S, E = prep.pkt_seq64[sel], prep.pkt_end64[sel]
    t = pkt["ts_ns"][sel].astype(np.int64)
    c0, c1 = S.copy(), E.copy()
    exact = np.zeros(len(sel), bool)
    if not _ranges_overlap(stream, S, E):
        exact[:] = True  # each copy event carries the bytes it copied (mbrec's recorder)
    reads = _sock(events, prep, SOCK_READ)
    if len(reads["t"]):
        zero = np.zeros(len(sel), np.int64)
        rz = np.zeros(len(reads["t"]), np.int64)
        hit = stab(reads["stream"], rz, rz + 1, reads["t"], stream, zero, t, "after", window=1)
        ok = hit >= 0
        h = np.maximum(hit, 0)
        c0 = np.where(ok, np.maximum(S, reads["a"][h]), c0)
        c1 = np.where(ok, np.minimum(E, reads["b"][h]), c1)
        exact = ok
    # Copies without a read record: deliver what earlier copies of the stream did not.
    if (~exact).any():
        delivered = grouped_cummax_before(stream, t, c1)
        c0 = np.where(exact, c0, np.maximum(c0, delivered))
    # Empty pieces (a later copy of bytes whose range is unknown without read records) stay:
    # they still mark a moment the application read.
    return {"stream": stream, "c0": c0, "c1": np.maximum(c1, c0), "t": t,
            "flow": stream // 2, "exact": exact}


def _ranges_overlap(stream: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
    """Whether any two non-empty ranges of one stream overlap (whole-skb copy ranges repeat
    over partial reads; ranges of the copied bytes never overlap)."""
    keep = hi > lo
    if keep.sum() < 2:
        return False
    st, lo, hi = stream[keep], lo[keep], hi[keep]
    span = int(hi.max()) - int(lo.min()) + 1
    order = np.argsort(st * span + (lo - lo.min()), kind="stable")
    st, lo, hi = st[order], lo[order], hi[order]
    same = st[1:] == st[:-1]
    return bool((same & (lo[1:] < hi[:-1])).any())


def _sock(events: dict, prep: Prepared, kind: int) -> dict:
    sock = events.get("sock")
    if sock is None or len(sock) == 0 or "sock" not in prep.ids:
        return {k: np.zeros(0, np.int64) for k in ("stream", "a", "b", "t", "flow")}
    sel = np.nonzero(sock["kind"] == kind)[0]
    return {"stream": prep.sock_stream[sel], "a": prep.sock_seq64[sel],
            "b": prep.sock_end64[sel], "t": sock["ts_ns"][sel].astype(np.int64),
            "flow": prep.sock_stream[sel] // 2}


def attach_copies(table: PacketTable, pieces: dict) -> None:
    """Fill ts[:, 3] of receive rows: the copy piece that delivered the row's first byte."""
    rows = table.pkt
    recv = (rows["direction"] == 1) & (rows["end64"] > rows["seq64"]) & ~rows["duplicate"]
    ri = np.nonzero(recv)[0]
    if len(ri) == 0 or len(pieces["t"]) == 0:
        return
    ts = rows["ts"][ri]
    ref = np.where(ts[:, 2] >= 0, ts[:, 2], np.where(ts[:, 1] >= 0, ts[:, 1], ts[:, 0]))
    pi = np.nonzero(pieces["c1"] > pieces["c0"])[0]
    hit = stab(pieces["stream"][pi], pieces["c0"][pi], pieces["c1"][pi], pieces["t"][pi],
               rows["stream"][ri], rows["seq64"][ri], ref, "after")
    ok = hit >= 0
    rows["ts"][ri[ok], 3] = pieces["t"][pi[hit[ok]]]


def receive_queue_wait(table: PacketTable, events: dict, prep: Prepared) -> dict:
    """Per received data skb seen at tcp_v4_rcv: time until the read returning its last byte."""
    rows = table.pkt
    reads = _sock(events, prep, SOCK_READ)
    ri = np.nonzero((rows["direction"] == 1) & (rows["end64"] > rows["seq64"])
                    & ~rows["duplicate"] & (rows["ts"][:, 2] >= 0))[0]
    if len(ri) == 0 or len(reads["t"]) == 0:
        return {"row": np.zeros(0, np.int64), "value": np.zeros(0, np.int64)}
    t_tcp = rows["ts"][ri, 2]
    hit = stab(reads["stream"], reads["a"], reads["b"], reads["t"], rows["stream"][ri],
               rows["end64"][ri] - 1, t_tcp, "after")
    ok = hit >= 0
    return {"row": ri[ok], "value": reads["t"][hit[ok]] - t_tcp[ok]}


def send_buffer_wait(table: PacketTable, events: dict, prep: Prepared) -> dict:
    """Per application write: time until tcp_transmit_skb of a range covering its last byte."""
    rows = table.pkt
    writes = _sock(events, prep, SOCK_WRITE)
    wi = np.nonzero(writes["b"] > writes["a"])[0] if len(writes["t"]) else np.zeros(0, np.int64)
    ri = np.nonzero((rows["direction"] == 0) & (rows["end64"] > rows["seq64"])
                    & (rows["ts"][:, 0] >= 0))[0]
    if len(wi) == 0 or len(ri) == 0:
        return {"flow": np.zeros(0, np.int64), "actor": np.zeros(0, np.int64),
                "t": np.zeros(0, np.int64), "value": np.zeros(0, np.int64)}
    hit = stab(rows["stream"][ri], rows["seq64"][ri], rows["end64"][ri], rows["ts"][ri, 0],
               writes["stream"][wi], writes["b"][wi] - 1, writes["t"][wi], "after")
    ok = hit >= 0
    t_w = writes["t"][wi][ok]
    return {"flow": writes["flow"][wi][ok], "actor": writes["stream"][wi][ok] % 2, "t": t_w,
            "value": rows["ts"][ri[hit[ok]], 0] - t_w}


def app_latency(table: PacketTable, pieces: dict) -> dict:
    """L_APP per read-to-send turn (see the module docstring). Returns flow, t_read, value."""
    rows = table.pkt
    # new data only: not a retransmission, and carrying payload (a SYN or a bare FIN occupies
    # sequence space but is not a request or a response)
    ctl = ((rows["flags"] & SYN) != 0).astype(np.int64) + ((rows["flags"] & FIN) != 0)
    send = ((rows["direction"] == 0) & (rows["end64"] - rows["seq64"] - ctl > 0)
            & ~rows["retrans"])
    si = np.nonzero(send)[0]
    ts = rows["ts"][si]
    first_t = np.where(ts >= 0, ts, BIG).min(axis=1)
    n_s, n_r = len(si), len(pieces["t"])
    if n_s == 0 or n_r == 0:
        z = np.zeros(0, np.int64)
        return {"flow": z, "actor": z, "t": z, "value": z}
    # the endpoint acting: the sender of a transmission, the reader of a copy. Turns are
    # followed per (flow, endpoint), so a host holding both ends of a flow is handled too.
    actor = np.concatenate([2 * rows["flow"][si] + rows["sender"][si],
                            pieces["stream"] ^ 1])
    t = np.concatenate([first_t, pieces["t"]])
    is_send = np.concatenate([np.ones(n_s, bool), np.zeros(n_r, bool)])
    t_tcp = np.concatenate([ts[:, 0], np.full(n_r, NONE, np.int64)])
    # by (endpoint, time), a read before a send at equal times
    order = stream_time_order(actor, 2 * t + is_send)
    a, tt, snd, ttcp = actor[order], t[order], is_send[order], t_tcp[order]
    turn = np.zeros(len(a), bool)
    turn[1:] = snd[1:] & ~snd[:-1] & (a[1:] == a[:-1])
    turn &= ttcp >= 0
    prev_t = np.empty_like(tt)
    prev_t[1:] = tt[:-1]
    idx = np.nonzero(turn)[0]
    return {"flow": a[idx] // 2, "actor": a[idx] % 2, "t": prev_t[idx],
            "value": ttcp[idx] - prev_t[idx]}
