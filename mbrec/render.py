"""Turning raw records into things people read: addresses, flags, flow names, event lines."""

from __future__ import annotations

import ipaddress

import numpy as np

from mbrec.events import CONSTANTS, PROBE_NAMES, SCHEMA_BY_NAME, TCP_FLAG_NAMES, TCP_STATES

AF_INET = CONSTANTS["MBREC_AF_INET"]
SOCK_KINDS = {CONSTANTS["MBREC_SOCK_WRITE"]: "write", CONSTANTS["MBREC_SOCK_READ"]: "read"}
FLOW_REASONS = {CONSTANTS[f"MBREC_FLOW_{n}"]: n.lower()
                for n in ("ACK", "PERIODIC", "CLOSE", "STOP", "STATE")}
TCP_KINDS = {CONSTANTS[f"MBREC_TCP_{n}"]: n.lower()
             for n in ("RTT_SAMPLE", "RETRANSMIT", "RECOVERY", "TIMEOUT", "STATE")}


def addr_strings(addr: np.ndarray, family: np.ndarray) -> list[str]:
    """Printable addresses for an (n, 16) uint8 array; each distinct address is formatted once."""
    if len(addr) == 0:
        return []
    halves = np.ascontiguousarray(addr, dtype=np.uint8).view("<u8").reshape(-1, 2)
    keys = np.column_stack([halves, np.asarray(family, dtype=np.uint64)])
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    names = []
    for lo, hi, f in uniq:
        raw = int(lo).to_bytes(8, "little") + int(hi).to_bytes(8, "little")
        names.append(str(ipaddress.IPv4Address(raw[:4])) if f == AF_INET
                     else f"[{ipaddress.IPv6Address(raw)}]")
    return [names[i] for i in np.asarray(inverse).ravel()]


def flags_string(flags: int) -> str:
    return "|".join(name for bit, name in TCP_FLAG_NAMES.items() if flags & bit) or "-"


def probe_name(probe: int) -> str:
    return PROBE_NAMES.get(int(probe), f"probe{int(probe)}")


def record_dicts(schema: str, recs: np.ndarray) -> list[dict]:
    """One dict per record, with addresses, flags, probe and kind names spelled out."""
    names = recs.dtype.names
    columns = {n: recs[n].tolist() for n in names if recs[n].ndim == 1 and n != "pad"}
    if schema not in SCHEMA_BY_NAME:  # a layout this mbrec does not know: fields as they are
        keys = list(columns)
        return [dict(zip(keys, row)) for row in zip(*(columns[k] for k in keys))]
    if "saddr" in names:
        columns["saddr"] = addr_strings(recs["saddr"], recs["family"])
        columns["daddr"] = addr_strings(recs["daddr"], recs["family"])
    if "probe" in columns:
        columns["probe"] = [probe_name(p) for p in columns["probe"]]
    if "tcp_flags" in columns:
        columns["tcp_flags"] = [flags_string(f) for f in columns["tcp_flags"]]
    labels = {"sock": ("kind", SOCK_KINDS), "flow": ("reason", FLOW_REASONS),
              "tcp": ("kind", TCP_KINDS)}.get(schema)
    if labels:
        key, table = labels
        columns[key] = [table.get(v, str(v)) for v in columns[key]]
    if "state" in columns:
        columns["state"] = [TCP_STATES.get(v, str(v)) for v in columns["state"]]
    keys = list(columns)
    return [dict(zip(keys, row)) for row in zip(*(columns[k] for k in keys))]


def text_line(host: str, schema: str, d: dict) -> str:
    """One event as one line, in the spirit of `perf script`."""
    ts = d["ts_ns"] / 1e9
    if schema not in SCHEMA_BY_NAME:
        return f"{host:>10} {ts:17.9f} {schema} {d}"
    conn = f"{d['saddr']}:{d['sport']} > {d['daddr']}:{d['dport']}"
    if schema == "pkt":
        return (f"{host:>10} {ts:17.9f} [{d['cpu']:03d}] {d['probe']:<22} {conn} "
                f"seq {d['seq']}:{d['end_seq']} ack {d['ack']} {d['tcp_flags']} "
                f"len {d['len']} id {d['ip_id']} gso {d['gso_segs']} if {d['ifindex']} "
                f"netns {d['netns']}")
    if schema == "sock":
        return (f"{host:>10} {ts:17.9f}       {'tcp_' + d['kind']:<22} {conn} "
                f"seq {d['seq_start']}:{d['seq_end']} bytes {d['bytes']}/{d['requested']} "
                f"pid {d['tgid']} netns {d['netns']}")
    if schema == "flow":
        return (f"{host:>10} {ts:17.9f}       {'flow_' + d['reason']:<22} {conn} "
                f"{d['state']} cwnd {d['snd_cwnd']} ssthresh {d['snd_ssthresh']} "
                f"srtt {d['srtt_us']}us inflight {d['packets_in_flight']} "
                f"sent {d['bytes_sent']} acked {d['bytes_acked']} recv {d['bytes_received']} "
                f"retrans {d['total_retrans']} wq {d['app_wqueue']}")
    if schema == "tcp":
        return (f"{host:>10} {ts:17.9f}       {'tcp_' + d['kind']:<22} {conn} "
                f"value {d['value']} seq {d['seq']}:{d['end_seq']} "
                f"state {d['old_state']}->{d['new_state']}")
    return f"{host:>10} {ts:17.9f} {schema} {d}"
