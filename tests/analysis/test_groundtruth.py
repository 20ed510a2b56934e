"""Every latency the analyzer reports, recovered exactly from synthetic traces with known truth.

mbrec.testing.clientserver simulates the kernel's view (TSO, GRO, coalescing, partial and coalesced reads,
pure and delayed ACKs, retransmissions, duplicates, reordering, wraparound, missing hooks) and
computes the truth from its own state; here the analyzer must reproduce every value, as a
multiset per latency name and host.
"""

import numpy as np
import pytest

from mbrec.analysis.host import analyze_host
from mbrec.analysis.latency import NAMES
from mbrec.testing.synthetic import write_trace
from mbrec.testing.clientserver import exchanges
from mbrec.trace.reader import read_trace


def analyse(tmp_path, gt, host, drop_sock=False):
    events = dict(gt.events[host])
    if drop_sock:
        events.pop("sock")
    path = write_trace(str(tmp_path / f"{host}.mbrec"), events, host=host,
                       boot_id=gt.hosts[host]["boot_id"])
    return analyze_host(read_trace(path))


def by_name(result):
    s = result.samples
    return {NAMES[i]: np.sort(s["value"][s["name"] == i]) for i in np.unique(s["name"])}


@pytest.fixture(scope="module", params=[(0, 0, "skb"), (1, 3 * 86_400 * 10**9, "skb"),
                                        (2, -500_000_000, "skb"), (3, 0, "bytes")],
                ids=["seed0", "seed1-offset3d", "seed2-offset-0.5s", "seed3-copied-bytes"])
def scenario(request, tmp_path_factory):
    seed, offset, copy_ranges = request.param
    gt = exchanges(n_flows=4, n_exchanges=14, seed=seed, server_offset_ns=offset,
                   copy_ranges=copy_ranges)
    tmp = tmp_path_factory.mktemp(f"gt{seed}")
    return gt, {h: analyse(tmp, gt, h) for h in ("client", "server")}


EXPECTED = {"client": ["L_TCP_1", "L_IP_1", "L_NIC_1", "L_NIC_4", "L_IP_4", "L_TCP_4",
                       "L_APP_1", "W_SND_1", "W_RCV_4"],
            "server": ["L_NIC_2", "L_IP_2", "L_TCP_2", "L_APP_2", "L_TCP_3", "L_IP_3",
                       "L_NIC_3", "W_SND_3", "W_RCV_2"]}


@pytest.mark.parametrize("host", ["client", "server"])
def test_every_latency_recovered_exactly(scenario, host):
    gt, results = scenario
    got, truth = by_name(results[host]), gt.truth[host]
    assert sorted(truth) == sorted(EXPECTED[host])
    assert sorted(got) == sorted(truth), "a latency the truth does not have (or lacks one)"
    for name in truth:
        assert len(got[name]) == len(truth[name]), name
        np.testing.assert_array_equal(got[name], truth[name], err_msg=name)
    assert results[host].negative == 0


def test_delayed_ack_never_pairs_as_response(scenario):
    """The server's delayed pure ACK goes out 20 us after the read and the response >= 100 us
    later: pairing with the ACK (MicroBPF's bug) would give values near 20 us."""
    gt, results = scenario
    app = by_name(results["server"])["L_APP_2"]
    assert len(app) == 4 * 14  # one per exchange: multi-segment requests/responses count once
    assert app.min() > 100_000


def test_roles_from_syn_and_from_ports(scenario):
    gt, results = scenario
    flows = results["server"].table.flows
    assert len(flows) == 4
    assert sorted(flows.client_source) == ["ports", "syn", "syn", "syn"]  # flow 2: no handshake
    # the client (10.0.0.1) is endpoint 0 in every flow here, the server is local 1
    assert (flows.client == 0).all() and (flows.local == 1).all()


def test_packet_table_structure(scenario):
    gt, results = scenario
    c = results["client"].table
    s = results["server"].table
    send = c.pkt["direction"] == 0
    # TSO: skbs of two frames leave as one driver event; GRO: the server merges frames
    assert (c.pkt["n_wire"][send] == 1).all()
    recv = s.pkt["direction"] == 1
    assert (s.pkt["n_wire"][recv] == 2).any() and (s.pkt["n_wire"][recv] == 1).any()
    # retransmissions on the client: an RTO retransmission every 5 exchanges, and spurious ones
    # (a whole skb every 9, only its tail, like a loss probe, every 7)
    spurious = sum(1 for i in range(14) if i % 9 == 8 or i % 7 == 3)
    n_retx = sum(1 for i in range(14) if i % 5 == 3) + spurious
    assert c.pkt["retrans"][send].sum() == 4 * n_retx
    # the spurious retransmissions arrive as duplicates on the server
    assert s.pkt["duplicate"].sum() == 4 * spurious
    # sequence numbers across the 2^32 wrap (flow 1) are unwrapped, so ranges stay ordered
    assert (s.pkt["end64"] >= s.pkt["seq64"]).all()
    assert (s.pkt["seq64"] >= 2**32).any()
    # every wire event belongs to a packet row of the same flow
    w = s.wire
    assert (w["row"] >= 0).all()
    assert (s.pkt["flow"][w["row"]] == w["flow"]).all()


def test_missing_hooks_give_no_number_rather_than_a_wrong_one(scenario):
    """ip_queue_xmit is missing for some client packets: L_TCP_1 and L_IP_1 have fewer samples
    than L_NIC_1, and nothing else changes (checked exactly above)."""
    gt, results = scenario
    got = by_name(results["client"])
    assert len(got["L_TCP_1"]) == len(got["L_IP_1"]) < len(got["L_NIC_1"])


def test_without_read_records_copy_layer_still_recovered(tmp_path):
    """No sock records (socket probes off): L_APP comes from the copies alone, exactly; the
    receive-queue and send-buffer waits cannot be computed and are absent, not invented; the
    copy layer is approximate (a partial read's bytes are unknown) and never later than truth."""
    gt = exchanges(n_flows=2, n_exchanges=10, seed=5)
    r = analyse(tmp_path, gt, "server", drop_sock=True)
    got = by_name(r)
    assert "W_RCV_2" not in got and "W_SND_3" not in got
    np.testing.assert_array_equal(got["L_APP_2"], gt.truth["server"]["L_APP_2"])
    assert len(got["L_TCP_2"]) == len(gt.truth["server"]["L_TCP_2"])
    assert (got["L_TCP_2"] <= gt.truth["server"]["L_TCP_2"]).all()
    assert r.copies_exact == 0.0


def test_copied_byte_ranges_make_the_copy_layer_exact_without_read_records(tmp_path):
    """mbrec's recorder writes the bytes each copy delivered: then even without socket records
    the receive TCP layer is exact."""
    gt = exchanges(n_flows=2, n_exchanges=10, seed=6, copy_ranges="bytes")
    r = analyse(tmp_path, gt, "server", drop_sock=True)
    got = by_name(r)
    np.testing.assert_array_equal(got["L_TCP_2"], gt.truth["server"]["L_TCP_2"])
    np.testing.assert_array_equal(got["L_APP_2"], gt.truth["server"]["L_APP_2"])


def test_both_ends_in_one_file(tmp_path):
    """Loopback traffic, or one recording of several namespaces: both endpoints of every flow
    are in one trace. Each sample is named by the endpoint that handled it, so the one file
    gives exactly the union of the client's and the server's truth."""
    gt = exchanges(n_flows=3, n_exchanges=10, seed=7)
    merged = {}
    for schema in ("pkt", "sock", "flow"):
        recs = np.concatenate([gt.events["client"][schema], gt.events["server"][schema]])
        merged[schema] = recs[np.argsort(recs["ts_ns"], kind="stable")]
    p = write_trace(str(tmp_path / "both.mbrec"), merged, host="both")
    r = analyze_host(read_trace(p))
    assert (r.table.flows.local == -1).all()
    got = by_name(r)
    truth = {**gt.truth["client"], **gt.truth["server"]}
    assert sorted(got) == sorted(truth)
    for name, values in truth.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)


def test_ipv6_addresses_take_the_general_path(tmp_path):
    """The same scenario over IPv6 (16-byte addresses): the same truth, exactly."""
    from mbrec.events import CONSTANTS
    gt = exchanges(n_flows=3, n_exchanges=8, seed=8)
    events = {}
    for schema, recs in gt.events["server"].items():
        recs = recs.copy()
        recs["family"] = CONSTANTS["MBREC_AF_INET6"]
        for field in ("saddr", "daddr"):
            recs[field][:, 4:] = recs[field][:, :4].repeat(3, axis=1)  # fill all 16 bytes
            recs[field][:, 0] = 0xFD
        events[schema] = recs
    p = write_trace(str(tmp_path / "v6.mbrec"), events, host="server")
    r = analyze_host(read_trace(p))
    assert len(r.table.flows) == 3 and (r.table.flows.family == CONSTANTS["MBREC_AF_INET6"]).all()
    got = by_name(r)
    for name, values in gt.truth["server"].items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)
