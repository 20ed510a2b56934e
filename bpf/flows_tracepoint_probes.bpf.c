/* SPDX-License-Identifier: GPL-2.0 */
/*
 * mbrec flow probes on tracepoints only (--attach tracepoint --probes flows): the same records
 * as flows_function_probes.bpf.c (struct mbrec_flow_event, mbrec_tcp_event, mbrec_sock_event, the same rings,
 * per-flow map and tick program), from the kernel's stable tracepoints, reading every kernel
 * struct at BTF offsets (MBREC_OFF_*; mbrec/recorder/btf.py FLOW_TP_FIELDS), so it compiles
 * without this kernel's headers. Pasted into mbrec.bpf.c with -DMBREC_FLOWS_TP; Python side:
 * FlowGroup.for_tracepoints in mbrec/recorder/flows.py. docs/metrics.md says which metrics
 * are exact here and which are not.
 *
 * Where each record comes from:
 *   per-ACK snapshot  tcp:tcp_probe(sk, skb), at the start of tcp_rcv_established: the values
 *                     before this segment (and its ACK) is processed, one ACK behind fexit
 *                     tcp_ack; every MBREC_FLOW_SAMPLE-th segment of a flow
 *   state, close      sock:inet_sock_set_state(sk, oldstate, newstate)
 *   retransmits       tcp:tcp_retransmit_skb(sk, skb)
 *   fast recovery,    tcp:tcp_cong_state_set(sk, ca_state), before the state is stored: a
 *   timeouts          change into CA_Recovery is a fast recovery; every CA_Loss entry is a
 *                     retransmission timeout (tcp_enter_loss runs on each RTO), first or
 *                     backed off by icsk_backoff
 *   writes, reads     sock:sock_send_length / sock_recv_length(sk, ret, flags), after the
 *                     socket call returned: [write_seq - ret, write_seq), [copied_seq - ret,
 *                     copied_seq); the requested size is not known (0)
 *   periodic/stop     mbrec_flow_tick, run on demand with BPF_PROG_TEST_RUN (as flows_function_probes.bpf.c)
 * Not here: raw RTT samples (no tracepoint sees them: rtt_samples and rtt_sum_us stay 0; the
 * smoothed RTT is in every snapshot), SYN-ACK timeouts of request sockets.
 */
#ifndef MBREC_FLOWS_TRACEPOINT_PROBES
#define MBREC_FLOWS_TRACEPOINT_PROBES

#include "flows_records.bpf.h"

#define MBREC_TCP_CA_RECOVERY 3
#define MBREC_TCP_CA_LOSS 4
#define MBREC_MSG_PEEK 2

/* A tcp_sock field at its BTF offset. */
#define TPR(dst, sk, f) RDO(dst, sk, MBREC_OFF_TP_##f)

/* A snapshot reads some thirty tcp_sock fields: one read of the span that holds them all
 * (MBREC_TP_SPAN_OFF, MBREC_TP_SPAN_LEN: from the BTF offsets, mbrec/recorder/flows.py) into a
 * per-CPU buffer is one helper call instead of thirty. One slot per probe id, as for the skb
 * span in mbrec.bpf.c (a program may be interrupted by another one on its CPU). SPR: a field
 * from that copy. */
struct mbrec_tp_span {
	u8 b[MBREC_TP_SPAN_LEN];
};
BPF_PERCPU_ARRAY(mbrec_tp_span_buf, struct mbrec_tp_span, MBREC_PROBE_MAX);
#define SPR(dst, span, f) \
	__builtin_memcpy(&(dst), (span)->b + (MBREC_OFF_TP_##f - MBREC_TP_SPAN_OFF), sizeof(dst))

/* Per-flow state, keyed by the socket id (its address in this mode). */
struct mbrec_flow_state {
	u64 sk;
	u64 established_ns;
	u64 read_bytes;
	u64 write_bytes;
	u32 fast_recoveries;
	u32 timeouts;
	u32 timeouts_backoff;
	u32 max_app_wqueue;
	u32 acks;
	u32 netns;
	u16 lport;
	u8 flags;
	u8 ca_state;            /* the last congestion state seen */
};
BPF_TABLE("lru_hash", u64, struct mbrec_flow_state, mbrec_flows, MBREC_FLOW_MAX);

/* Addresses and ports as the packet probes read them (oriented as sent), from a copy of the
 * socket in the calling probe's slot; 0 if it is no full TCP socket. */
static __always_inline int mbrec_flow_read_id(struct sock *sk, struct mbrec_flow_id *id,
					      u32 probe)
{
	struct mbrec_pkt_event e = {};
	__builtin_memset(id, 0, sizeof(*id));
	id->cookie = mbrec_sock_id(sk);
	struct mbrec_sk_span *ks = mbrec_sk_span(sk, probe);
	if (!ks || !mbrec_sk_span_tcp(ks) || !mbrec_sock_tuple_span(&e, ks, 1))
		return 0;
	id->netns = e.netns;
	id->family = e.family;
	id->lport = e.sport;
	id->rport = e.dport;
	__builtin_memcpy(id->saddr, e.saddr, 16);
	__builtin_memcpy(id->daddr, e.daddr, 16);
	return 1;
}

static __always_inline int mbrec_flow_cgroup_ok(struct sock *sk)
{
#if MBREC_CGROUP_ID
	void *cg = NULL, *kn = NULL;
	u64 id = 0;
	RDO(cg, sk, MBREC_OFF_SK_CGRP);
	if (cg)
		RDO(kn, cg, MBREC_OFF_CGROUP_KN);
	if (kn)
		RDO(id, kn, MBREC_OFF_KN_ID);
	return id == MBREC_CGROUP_ID;
#else
	return 1;
#endif
}

/* The flow's state, made on first sight if the packet probes' filters keep the flow. */
static __always_inline struct mbrec_flow_state *
mbrec_flow_state_get(struct sock *sk, struct mbrec_flow_id *id, int create)
{
	struct mbrec_flow_state *st = mbrec_flows.lookup(&id->cookie);
	if (st || !create || !id->cookie)
		return st;
	if (!(MBREC_NETNS_OK(id->netns)) || !(MBREC_PORT_OK(id->lport, id->rport)) ||
	    !(MBREC_ADDR_OK(id)) || !mbrec_flow_cgroup_ok(sk))
		return NULL;
	struct mbrec_flow_state fresh = {};
	fresh.sk = (u64)sk;
	u8 state = 0;
	RDO(state, sk, MBREC_OFF_SK_STATE);
	if (state != MBREC_TCP_SYN_SENT && state != MBREC_TCP_SYN_RECV)
		fresh.established_ns = bpf_ktime_get_ns();
	fresh.netns = id->netns;
	fresh.lport = id->lport;
	mbrec_flows.update(&id->cookie, &fresh);
	return mbrec_flows.lookup(&id->cookie);
}

static __always_inline u32 mbrec_flow_app_wqueue(struct sock *sk, struct mbrec_flow_state *st)
{
	u32 write_seq = 0, snd_nxt = 0;
	TPR(write_seq, sk, WRITE_SEQ);
	TPR(snd_nxt, sk, SND_NXT);
	u32 q = write_seq - snd_nxt;
	if ((s32)q < 0)
		q = 0;
	if (q > st->max_app_wqueue)
		st->max_app_wqueue = q;
	return q;
}

static __always_inline void mbrec_flow_snapshot(struct sock *sk, struct mbrec_flow_id *id,
						struct mbrec_flow_state *st, u8 reason, u8 probe)
{
	u32 slot = probe;
	struct mbrec_tp_span *span = mbrec_tp_span_buf.lookup(&slot);
	if (!span || bpf_probe_read_kernel(span->b, MBREC_TP_SPAN_LEN,
					   (char *)sk + MBREC_TP_SPAN_OFF))
		return;
	struct mbrec_flow_event *ev = mbrec_flow_ring.ringbuf_reserve(sizeof(struct mbrec_flow_event));
	if (!ev) {
		mbrec_count_lost(probe);
		return;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = bpf_ktime_get_ns();
	ev->sock_cookie = id->cookie;
	ev->established_ns = st->established_ns;
	SPR(ev->bytes_sent, span, BYTES_SENT);
	SPR(ev->bytes_acked, span, BYTES_ACKED);
	SPR(ev->bytes_received, span, BYTES_RECEIVED);
	SPR(ev->bytes_retrans, span, BYTES_RETRANS);
	ev->read_bytes = st->read_bytes;
	ev->write_bytes = st->write_bytes;
	ev->netns = id->netns;
	SPR(ev->snd_cwnd, span, SND_CWND);
	SPR(ev->snd_ssthresh, span, SND_SSTHRESH);
	SPR(ev->snd_wnd, span, SND_WND);
	SPR(ev->rcv_wnd, span, RCV_WND);
	SPR(ev->mss_cache, span, MSS_CACHE);
	u16 advmss = 0;
	SPR(advmss, span, ADVMSS);
	ev->advmss = advmss;
	SPR(ev->packets_out, span, PACKETS_OUT);
	SPR(ev->sacked_out, span, SACKED_OUT);
	SPR(ev->lost_out, span, LOST_OUT);
	SPR(ev->retrans_out, span, RETRANS_OUT);
	/* tcp_packets_in_flight(): packets_out - (sacked_out + lost_out) + retrans_out */
	ev->packets_in_flight = ev->packets_out - (ev->sacked_out + ev->lost_out) + ev->retrans_out;
	SPR(ev->total_retrans, span, TOTAL_RETRANS);
	ev->fast_recoveries = st->fast_recoveries;
	ev->timeouts = st->timeouts;
	ev->timeouts_backoff = st->timeouts_backoff;
	/* write_seq - snd_nxt, folded into the flow's maximum (as mbrec_flow_app_wqueue) */
	u32 q = 0, write_seq = 0, snd_nxt = 0;
	SPR(write_seq, span, WRITE_SEQ);
	SPR(snd_nxt, span, SND_NXT);
	q = write_seq - snd_nxt;
	if ((s32)q < 0)
		q = 0;
	if (q > st->max_app_wqueue)
		st->max_app_wqueue = q;
	ev->app_wqueue = q;
	ev->max_app_wqueue = st->max_app_wqueue;
	u32 srtt8 = 0, mdev4 = 0, rate_delivered = 0, rate_interval_us = 0;
	SPR(srtt8, span, SRTT_US);
	SPR(mdev4, span, MDEV_US);
	ev->srtt_us = srtt8 >> 3;       /* as tcp_info's tcpi_rtt */
	ev->rttvar_us = mdev4 >> 2;     /* as tcp_info's tcpi_rttvar */
	/* rtt_min is a struct minmax: s[0].v, the current minimum, is its second u32 */
	RDO(ev->min_rtt_us, span, MBREC_OFF_TP_RTT_MIN + 4);
	SPR(ev->snd_una, span, SND_UNA);
	SPR(ev->snd_nxt, span, SND_NXT);
	SPR(ev->write_seq, span, WRITE_SEQ);
	SPR(ev->rcv_nxt, span, RCV_NXT);
	SPR(ev->copied_seq, span, COPIED_SEQ);
	ev->bytes_in_flight = ev->snd_nxt - ev->snd_una;
	SPR(rate_delivered, span, RATE_DELIVERED);
	SPR(rate_interval_us, span, RATE_INTERVAL_US);
	if (rate_interval_us)
		ev->delivery_rate = (u64)rate_delivered * ev->mss_cache * 1000000ULL / rate_interval_us;
	__builtin_memcpy(ev->saddr, id->saddr, 16);
	__builtin_memcpy(ev->daddr, id->daddr, 16);
	ev->sport = id->lport;
	ev->dport = id->rport;
	u8 state = 0;
	RDO(state, span, MBREC_OFF_SK_STATE);
	ev->state = state;
	ev->reason = reason;
	ev->family = id->family;
	ev->flags = st->flags;
	mbrec_flow_ring.ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

/* tcp:tcp_probe(sk, skb): a segment arrived on an established socket */
int mbrec_flow_tp_tcp_ack(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	u64 cookie = mbrec_sock_id(sk);
	struct mbrec_flow_id id;
	struct mbrec_flow_state *st = mbrec_flows.lookup(&cookie);
	if (!st) {
		if (!mbrec_flow_read_id(sk, &id, MBREC_PROBE_TCP_ACK))
			return 0;
		st = mbrec_flow_state_get(sk, &id, 1);
		if (!st)
			return 0;
	}
	st->acks++;
	if (MBREC_FLOW_SAMPLE == 0 || st->acks % (MBREC_FLOW_SAMPLE ? MBREC_FLOW_SAMPLE : 1))
		return 0;
	if (!mbrec_flow_read_id(sk, &id, MBREC_PROBE_TCP_ACK))
		return 0;
	mbrec_flow_snapshot(sk, &id, st, MBREC_FLOW_ACK, MBREC_PROBE_TCP_ACK);
	return 0;
}

/* sock:inet_sock_set_state(sk, oldstate, newstate): fires after the port of a closing socket
 * was released, so the close record keeps the port from the flow's state. */
int mbrec_flow_tp_tcp_state(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	int oldstate = (int)ctx->args[1], newstate = (int)ctx->args[2];
	struct mbrec_flow_id id;
	struct mbrec_flow_state *st;
	if (!mbrec_flow_read_id(sk, &id, MBREC_PROBE_TCP_STATE))
		return 0;
	if (newstate == MBREC_TCP_ESTABLISHED) {
		st = mbrec_flow_state_get(sk, &id, 1);
		if (!st)
			return 0;
		if (!(st->flags & MBREC_FLOWF_SEEN_ESTABLISH)) {
			st->established_ns = bpf_ktime_get_ns();
			st->flags |= MBREC_FLOWF_SEEN_ESTABLISH;
		}
	} else {
		st = mbrec_flows.lookup(&id.cookie);
		if (!st)
			return 0;
	}
	if (!id.lport)
		id.lport = st->lport;
	mbrec_flow_tcp_event(&id, MBREC_TCP_STATE, newstate, 0, 0, oldstate, newstate,
			     MBREC_PROBE_TCP_STATE);
	if (newstate == MBREC_TCP_CLOSE) {
		mbrec_flow_snapshot(sk, &id, st, MBREC_FLOW_CLOSE, MBREC_PROBE_TCP_STATE);
		mbrec_flows.delete(&id.cookie);
	}
	return 0;
}

/* tcp:tcp_retransmit_skb(sk, skb, ...) */
int mbrec_flow_tp_tcp_retransmit(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	struct sk_buff *skb = (struct sk_buff *)ctx->args[1];
	struct mbrec_flow_id id;
	if (!mbrec_flow_read_id(sk, &id, MBREC_PROBE_TCP_RETRANSMIT) ||
	    !mbrec_flow_state_get(sk, &id, 1))
		return 0;
	char *cb = (char *)skb + MBREC_OFF_SKB_CB;
	u32 seq = 0, end_seq = 0;
	u16 segs = 0;
	u8 state = 0;
	RDO(seq, cb, MBREC_OFF_TCB_SEQ);
	RDO(end_seq, cb, MBREC_OFF_TCB_END_SEQ);
	RDO(segs, cb, MBREC_OFF_TCB_TCP_GSO_SEGS);
	RDO(state, sk, MBREC_OFF_SK_STATE);
	mbrec_flow_tcp_event(&id, MBREC_TCP_RETRANSMIT, segs ? segs : 1, seq, end_seq, state, state,
			     MBREC_PROBE_TCP_RETRANSMIT);
	return 0;
}

/* tcp:tcp_cong_state_set(sk, ca_state) */
int mbrec_flow_tp_tcp_cong_state_set(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	u8 ca_state = (u8)ctx->args[1];
	struct mbrec_flow_id id;
	if (!mbrec_flow_read_id(sk, &id, MBREC_PROBE_TCP_ENTER_RECOVERY))
		return 0;
	struct mbrec_flow_state *st = mbrec_flow_state_get(sk, &id, 1);
	if (!st)
		return 0;
	u8 before = st->ca_state;
	st->ca_state = ca_state;
	u32 una = 0, nxt = 0;
	TPR(una, sk, SND_UNA);
	TPR(nxt, sk, SND_NXT);
	if (ca_state == MBREC_TCP_CA_RECOVERY && before != MBREC_TCP_CA_RECOVERY) {
		u32 n = ++st->fast_recoveries;
		mbrec_flow_tcp_event(&id, MBREC_TCP_RECOVERY, n, una, nxt, 0, 0,
				     MBREC_PROBE_TCP_ENTER_RECOVERY);
	} else if (ca_state == MBREC_TCP_CA_LOSS) {
		u8 backoff = 0, state = 0;
		RDO(backoff, sk, MBREC_OFF_ICSK_BACKOFF);
		RDO(state, sk, MBREC_OFF_SK_STATE);
		if (backoff == 0)
			st->timeouts += 1;
		else
			st->timeouts_backoff += 1;
		mbrec_flow_tcp_event(&id, MBREC_TCP_TIMEOUT, backoff, una, nxt, state, state,
				     MBREC_PROBE_TCP_TIMEOUT);
	}
	return 0;
}

/* sock:sock_send_length / sock_recv_length(sk, ret, flags): after sendmsg / recvmsg returned */
static __always_inline int mbrec_flow_on_length(struct sock *sk, int ret, int flags, u8 kind)
{
	if (ret <= 0 || !sk)
		return 0;
	if (kind == MBREC_SOCK_READ && (flags & MBREC_MSG_PEEK)) /* a peek consumes nothing */
		return 0;
	struct mbrec_flow_id id;
	if (!mbrec_flow_read_id(sk, &id, kind == MBREC_SOCK_WRITE ? MBREC_PROBE_TCP_SENDMSG
								  : MBREC_PROBE_TCP_RECVMSG))
		return 0;
	struct mbrec_flow_state *st = mbrec_flow_state_get(sk, &id, 1);
	if (!st)
		return 0;
	u32 end = 0;
	if (kind == MBREC_SOCK_WRITE) {
		TPR(end, sk, WRITE_SEQ);
		st->write_bytes += (u64)ret;
		mbrec_flow_app_wqueue(sk, st);
		mbrec_flow_sock_event(&id, kind, end - (u32)ret, end, (u32)ret, 0, MBREC_PROBE_TCP_SENDMSG);
	} else {
		TPR(end, sk, COPIED_SEQ);
		st->read_bytes += (u64)ret;
		mbrec_flow_sock_event(&id, kind, end - (u32)ret, end, (u32)ret, 0, MBREC_PROBE_TCP_RECVMSG);
	}
	return 0;
}

int mbrec_flow_tp_tcp_sendmsg(struct bpf_raw_tracepoint_args *ctx)
{
	return mbrec_flow_on_length((struct sock *)ctx->args[0], (int)ctx->args[1],
				    (int)ctx->args[2], MBREC_SOCK_WRITE);
}

int mbrec_flow_tp_tcp_recvmsg(struct bpf_raw_tracepoint_args *ctx)
{
	return mbrec_flow_on_length((struct sock *)ctx->args[0], (int)ctx->args[1],
				    (int)ctx->args[2], MBREC_SOCK_READ);
}

/* On-demand snapshot (periodic and at stop), run with BPF_PROG_TEST_RUN:
 * args[0] = socket id, args[1] = reason. Returns 1 if the flow is gone. */
int mbrec_flow_tick(struct bpf_raw_tracepoint_args *ctx)
{
	u64 cookie = ctx->args[0];
	u8 reason = (u8)ctx->args[1];
	struct mbrec_flow_state *st = mbrec_flows.lookup(&cookie);
	if (!st)
		return 1;
	struct sock *sk = (struct sock *)st->sk;
	u8 state = 0;
	RDO(state, sk, MBREC_OFF_SK_STATE);
	if (mbrec_sock_id(sk) != cookie || state == MBREC_TCP_CLOSE) {
		mbrec_flows.delete(&cookie);
		return 1;
	}
	struct mbrec_flow_id id;
	mbrec_flow_read_id(sk, &id, MBREC_PROBE_FLOW_PERIODIC);
	id.cookie = cookie;
	if (!id.lport)
		id.lport = st->lport;
	mbrec_flow_snapshot(sk, &id, st, reason, MBREC_PROBE_FLOW_PERIODIC);
	return 0;
}

#endif /* MBREC_FLOWS_TRACEPOINT_PROBES */
