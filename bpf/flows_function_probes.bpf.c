/* SPDX-License-Identifier: GPL-2.0 */
/*
 * mbrec flow probes: the 16 flow metrics (docs/metrics.md), TCP events and application
 * reads/writes. #included at the end of mbrec.bpf.c when MBREC_FLOWS is defined; uses its RD(),
 * mbrec_count_lost(), mbrec_sock_id(), MBREC_SOCK_COOKIE and filter macros, so the same
 * filters and socket ids apply. Python side: mbrec/recorder/flows.py.
 *
 * Compile-time switches, set by flows.py from the hooks it resolved on the running kernel, in
 * the packet probes' style (bpf/mbrec.bpf.c):
 *   MBREC_ATTACH_<HOOK>         how the hook's handler is compiled: 1 fentry/fexit, 2
 *                               kprobe/kretprobe, 3 raw tracepoint; 0 or absent: not compiled
 *                               (not traceable here, or served by another hook)
 *   MBREC_FLOW_SAMPLE=N         per-ACK snapshot on every Nth ACK of a flow (0 = none)
 *   MBREC_FLOW_RTT_EVENTS       also emit one tcp event per raw RTT sample
 *   MBREC_FLOW_MAX=N            flows tracked at once (LRU: the oldest idle one is evicted)
 *
 * Where each metric comes from (the kernel is Linux 6.1; names checked in lab.md):
 *   RTT samples    tcp_ack_update_rtt(sk, flag, seq_rtt_us, sack_rtt_us, ca_rtt_us, rs):
 *                  tcp_rtt_estimator and tcp_update_rtt_min are inlined into it, so its entry
 *                  is the last traceable point that sees the raw sample. The sample the kernel
 *                  feeds to tcp_rtt_estimator is recomputed here with the kernel's own rule.
 *   fast recovery  tcp_enter_recovery entry (the kernel's TCPSackRecovery/TCPRenoRecovery).
 *   timeouts       tcp_retransmit_timer entry, counted under the kernel's TCPTimeouts rule;
 *                  first (icsk_backoff == 0) and backed-off counted apart.
 *   per-ACK        tcp_ack exit: the values after this ACK was processed.
 *   state          raw tracepoint inet_sock_set_state (sk, oldstate, newstate).
 *   retransmits    raw tracepoint tcp_retransmit_skb (sk, skb); totals from tp->total_retrans.
 *   writes         tcp_sendmsg_locked exit (before release_sock runs the backlog, so the send
 *                  queue is seen at its peak); sk_stream_wait_memory entry for the peak while a
 *                  writer blocks on a full buffer.
 *   reads          tcp_recvmsg entry (copied_seq) and exit (not tcp_cleanup_rbuf: a blocking read calls it once per
 *                  wait with the running total, which double-counts).
 *   periodic/stop  a raw_tp program run on demand by BPF_PROG_TEST_RUN with the cookie of the
 *                  flow to snapshot (BCC cannot iterate a map in BPF).
 */
#ifndef MBREC_FLOWS_FUNCTION_PROBES
#define MBREC_FLOWS_FUNCTION_PROBES

#include "flows_records.bpf.h"

#define MBREC_RD(dst, src) RD(dst, src)

/* Kernel constants that live in .c files, not headers (net/ipv4/tcp_input.c). */
#define MBREC_FLAG_DATA_ACKED 0x04
#define MBREC_FLAG_SYN_ACKED 0x10
#define MBREC_FLAG_ACKED (MBREC_FLAG_DATA_ACKED | MBREC_FLAG_SYN_ACKED)

/* Per-flow state that must survive between samples. Keyed by socket cookie. Every hook that
 * updates it runs with the socket locked (process or softirq), so plain increments suffice. */
struct mbrec_flow_state {
	u64 sk;                 /* for on-demand snapshots; checked against the cookie first */
	u64 established_ns;
	u64 rtt_sum_us;
	u64 read_bytes;
	u64 write_bytes;
	u32 rtt_samples;
	u32 fast_recoveries;
	u32 timeouts;
	u32 timeouts_backoff;
	u32 max_app_wqueue;
	u32 acks;
	u32 netns;
	u16 lport;              /* the local port when the state was made: see mbrec_flow_on_state */
	u8 flags;
	u8 pad;
};
BPF_TABLE("lru_hash", u64, struct mbrec_flow_state, mbrec_flows, MBREC_FLOW_MAX);

/* The socket's id, as the packet probes give it (mbrec_sock_id in mbrec.bpf.c). */
static __always_inline u64 mbrec_flow_cookie_of(struct sock *sk)
{
	return mbrec_sock_id(sk);
}

/* --cgroup: the socket's cgroup v2 id, as the packet probes check it. */
static __always_inline int mbrec_flow_cgroup_ok(struct sock *sk)
{
#if MBREC_CGROUP_ID
	struct cgroup *cg = NULL;
	struct kernfs_node *kn = NULL;
	u64 cgid = 0;
	RD(cg, sk->sk_cgrp_data.cgroup);
	if (cg)
		RD(kn, cg->kn);
	if (kn)
		RD(cgid, kn->id);
	return cgid == MBREC_CGROUP_ID;
#else
	return 1;
#endif
}

static __always_inline void mbrec_flow_read_id(struct sock *sk, u64 cookie, struct mbrec_flow_id *id)
{
	struct net *net = NULL;
	u16 dport = 0;

	id->cookie = cookie;
	MBREC_RD(net, sk->__sk_common.skc_net.net);
	id->netns = 0;
	if (net)
		bpf_probe_read_kernel(&id->netns, sizeof(id->netns), &net->ns.inum);
	MBREC_RD(id->family, sk->__sk_common.skc_family);
	MBREC_RD(id->lport, sk->__sk_common.skc_num);
	MBREC_RD(dport, sk->__sk_common.skc_dport);
	id->rport = __builtin_bswap16(dport);
	__builtin_memset(id->saddr, 0, sizeof(id->saddr));
	__builtin_memset(id->daddr, 0, sizeof(id->daddr));
	if (id->family == MBREC_AF_INET6) {
		u32 w[4] = {};
		MBREC_RD(w, sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32);
		/* an IPv4-mapped IPv6 socket (a v6 listener accepting IPv4) is an IPv4 flow, as in
		 * the packet probes (mbrec_sock_tuple) */
		if (w[0] == 0 && w[1] == 0 && w[2] == htonl(0xffff))
			id->family = MBREC_AF_INET;
	}
	if (id->family == MBREC_AF_INET6) {
		bpf_probe_read_kernel(id->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_probe_read_kernel(id->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		bpf_probe_read_kernel(id->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_probe_read_kernel(id->daddr, 4, &sk->__sk_common.skc_daddr);
	}
}

/*
 * The flow's state, created on first sight if the filters keep it. A flow first seen after
 * it was established gets established_ns = now with SEEN_ESTABLISH clear: a lower bound.
 */
static __always_inline struct mbrec_flow_state *
mbrec_flow_state_get(struct sock *sk, struct mbrec_flow_id *id, int create)
{
	struct mbrec_flow_state *st = mbrec_flows.lookup(&id->cookie);
	if (st || !create || !id->cookie)
		return st;
	if (id->family != MBREC_AF_INET && id->family != MBREC_AF_INET6)
		return NULL;
	/* the packet probes' filters, decided once per flow */
	if (!(MBREC_NETNS_OK(id->netns)) || !(MBREC_PORT_OK(id->lport, id->rport)) ||
	    !(MBREC_ADDR_OK(id)) || !mbrec_flow_cgroup_ok(sk))
		return NULL;
	struct mbrec_flow_state fresh = {};
	fresh.sk = (u64)sk;
	/* 0 until the flow is established (a flow seen first in SYN_SENT/SYN_RECV, e.g. by the
	 * ACK of its SYN-ACK, gets the exact time at its ESTABLISHED transition) */
	u8 state = 0;
	MBREC_RD(state, sk->__sk_common.skc_state);
	if (state != TCP_SYN_SENT && state != TCP_SYN_RECV)
		fresh.established_ns = bpf_ktime_get_ns();
	fresh.netns = id->netns;
	fresh.lport = id->lport;
	mbrec_flows.update(&id->cookie, &fresh);
	return mbrec_flows.lookup(&id->cookie);
}

/* write_seq - snd_nxt, folded into the flow's maximum. */
static __always_inline u32 mbrec_flow_app_wqueue(struct tcp_sock *tp, struct mbrec_flow_state *st)
{
	u32 write_seq = 0, snd_nxt = 0;
	MBREC_RD(write_seq, tp->write_seq);
	MBREC_RD(snd_nxt, tp->snd_nxt);
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
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	struct mbrec_flow_event *ev;
	u32 app_wqueue = mbrec_flow_app_wqueue(tp, st);

	ev = mbrec_flow_ring.ringbuf_reserve(sizeof(struct mbrec_flow_event));
	if (!ev) {
		mbrec_count_lost(probe);
		return;
	}
	ev->ts_ns = bpf_ktime_get_ns();
	ev->sock_cookie = id->cookie;
	ev->established_ns = st->established_ns;
	MBREC_RD(ev->bytes_sent, tp->bytes_sent);
	MBREC_RD(ev->bytes_acked, tp->bytes_acked);
	MBREC_RD(ev->bytes_received, tp->bytes_received);
	MBREC_RD(ev->bytes_retrans, tp->bytes_retrans);
	ev->rtt_sum_us = st->rtt_sum_us;
	ev->read_bytes = st->read_bytes;
	ev->write_bytes = st->write_bytes;
	ev->netns = id->netns;
	ev->rtt_samples = st->rtt_samples;
	MBREC_RD(ev->snd_cwnd, tp->snd_cwnd);
	MBREC_RD(ev->snd_ssthresh, tp->snd_ssthresh);
	MBREC_RD(ev->snd_wnd, tp->snd_wnd);
	MBREC_RD(ev->rcv_wnd, tp->rcv_wnd);
	MBREC_RD(ev->mss_cache, tp->mss_cache);
	u16 advmss = 0;
	MBREC_RD(advmss, tp->advmss);
	ev->advmss = advmss;
	MBREC_RD(ev->packets_out, tp->packets_out);
	MBREC_RD(ev->sacked_out, tp->sacked_out);
	MBREC_RD(ev->lost_out, tp->lost_out);
	MBREC_RD(ev->retrans_out, tp->retrans_out);
	/* tcp_packets_in_flight(): packets_out - (sacked_out + lost_out) + retrans_out */
	ev->packets_in_flight = ev->packets_out - (ev->sacked_out + ev->lost_out) + ev->retrans_out;
	MBREC_RD(ev->total_retrans, tp->total_retrans);
	ev->fast_recoveries = st->fast_recoveries;
	ev->timeouts = st->timeouts;
	ev->timeouts_backoff = st->timeouts_backoff;
	ev->app_wqueue = app_wqueue;
	ev->max_app_wqueue = st->max_app_wqueue;
	u32 srtt8 = 0, mdev4 = 0, rate_delivered = 0, rate_interval_us = 0;
	MBREC_RD(srtt8, tp->srtt_us);
	MBREC_RD(mdev4, tp->mdev_us);
	ev->srtt_us = srtt8 >> 3;       /* as tcp_info's tcpi_rtt */
	ev->rttvar_us = mdev4 >> 2;     /* as tcp_info's tcpi_rttvar */
	MBREC_RD(ev->min_rtt_us, tp->rtt_min.s[0].v);
	MBREC_RD(ev->snd_una, tp->snd_una);
	MBREC_RD(ev->snd_nxt, tp->snd_nxt);
	MBREC_RD(ev->write_seq, tp->write_seq);
	MBREC_RD(ev->rcv_nxt, tp->rcv_nxt);
	MBREC_RD(ev->copied_seq, tp->copied_seq);
	ev->bytes_in_flight = ev->snd_nxt - ev->snd_una;
	/* tcp_info's tcpi_delivery_rate: rate_delivered * mss_cache * 1e6 / rate_interval_us */
	MBREC_RD(rate_delivered, tp->rate_delivered);
	MBREC_RD(rate_interval_us, tp->rate_interval_us);
	ev->delivery_rate = 0;
	if (rate_interval_us)
		ev->delivery_rate = (u64)rate_delivered * ev->mss_cache * 1000000ULL / rate_interval_us;
	__builtin_memcpy(ev->saddr, id->saddr, 16);
	__builtin_memcpy(ev->daddr, id->daddr, 16);
	ev->sport = id->lport;
	ev->dport = id->rport;
	u8 state = 0;
	MBREC_RD(state, sk->__sk_common.skc_state);
	ev->state = state;
	ev->reason = reason;
	ev->family = id->family;
	ev->flags = st->flags;
	mbrec_flow_ring.ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

/* ---- handler bodies, shared by the fentry and the kprobe wrappers ---- */

static __always_inline int mbrec_flow_on_ack_done(struct sock *sk, u64 cookie, int ret)
{
	struct mbrec_flow_id id;
	struct mbrec_flow_state *st;

	if (ret <= 0)           /* old or invalid ACK: nothing changed */
		return 0;
	st = mbrec_flows.lookup(&cookie);
	if (!st) {
		mbrec_flow_read_id(sk, cookie, &id);
		st = mbrec_flow_state_get(sk, &id, 1);
		if (!st)
			return 0;
	}
	st->acks++;
	if (MBREC_FLOW_SAMPLE == 0 || st->acks % (MBREC_FLOW_SAMPLE ? MBREC_FLOW_SAMPLE : 1))
		return 0;
	mbrec_flow_read_id(sk, cookie, &id);
	mbrec_flow_snapshot(sk, &id, st, MBREC_FLOW_ACK, MBREC_PROBE_TCP_ACK);
	return 0;
}

static __always_inline int mbrec_flow_on_rtt(struct sock *sk, u64 cookie, int flag,
					     long seq_rtt_us, long sack_rtt_us)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct mbrec_flow_id id;
	long sample = seq_rtt_us;

	/* The sample tcp_ack_update_rtt() hands to tcp_rtt_estimator(), by its own rules:
	 * ACK timing, else SACK timing, else the timestamp echo when this ACK acked data. */
	if (sample < 0)
		sample = sack_rtt_us;
	if (sample < 0 && (flag & MBREC_FLAG_ACKED)) {
		struct tcp_options_received opt = {};
		u64 mstamp = 0;
		bpf_probe_read_kernel(&opt, sizeof(opt), &tp->rx_opt);
		MBREC_RD(mstamp, tp->tcp_mstamp);
		if (opt.saw_tstamp && opt.rcv_tsecr) {
			u32 delta = (u32)(mstamp / 1000) - opt.rcv_tsecr; /* tcp_time_stamp(): ms */
			if (delta < 0x7fffffff / 1000) {
				if (!delta)
					delta = 1;
				sample = (long)delta * 1000;
			}
		}
	}
	if (sample < 0)
		return 0;
	id.cookie = cookie;
	struct mbrec_flow_state *st = mbrec_flows.lookup(&id.cookie);
	if (!st) {
		mbrec_flow_read_id(sk, id.cookie, &id);
		st = mbrec_flow_state_get(sk, &id, 1);
		if (!st)
			return 0;
	}
	st->rtt_samples += 1;
	st->rtt_sum_us += (u64)sample;
#ifdef MBREC_FLOW_RTT_EVENTS
	mbrec_flow_read_id(sk, id.cookie, &id);
	mbrec_flow_tcp_event(&id, MBREC_TCP_RTT_SAMPLE, (u32)sample, 0, 0, 0, 0, MBREC_PROBE_TCP_RTT);
#endif
	return 0;
}

static __always_inline int mbrec_flow_on_recovery(struct sock *sk, u64 cookie)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct mbrec_flow_id id;
	mbrec_flow_read_id(sk, cookie, &id);
	struct mbrec_flow_state *st = mbrec_flow_state_get(sk, &id, 1);
	if (!st)
		return 0;
	u32 n = ++st->fast_recoveries;
	u32 una = 0, nxt = 0;
	MBREC_RD(una, tp->snd_una);
	MBREC_RD(nxt, tp->snd_nxt);
	mbrec_flow_tcp_event(&id, MBREC_TCP_RECOVERY, n, una, nxt, 0, 0,
			     MBREC_PROBE_TCP_ENTER_RECOVERY);
	return 0;
}

/*
 * tcp_retransmit_timer() entry. Counted exactly where the kernel counts TCPTimeouts: not for
 * a Fast Open SYN-ACK timer, not with nothing outstanding, not for the zero-window branch.
 */
static __always_inline int mbrec_flow_on_rto(struct sock *sk, u64 cookie)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct inet_connection_sock *icsk = (struct inet_connection_sock *)sk;
	void *fastopen_rsk = NULL;
	u32 packets_out = 0, snd_wnd = 0;
	unsigned long flags_word = 0;
	u8 state = 0, backoff = 0;

	MBREC_RD(fastopen_rsk, tp->fastopen_rsk);
	MBREC_RD(packets_out, tp->packets_out);
	if (fastopen_rsk || !packets_out)
		return 0;
	MBREC_RD(snd_wnd, tp->snd_wnd);
	MBREC_RD(flags_word, sk->sk_flags);
	MBREC_RD(state, sk->__sk_common.skc_state);
	if (!snd_wnd && !(flags_word & (1UL << SOCK_DEAD)) &&
	    !((1 << state) & (TCPF_SYN_SENT | TCPF_SYN_RECV)))
		return 0;
	MBREC_RD(backoff, icsk->icsk_backoff);

	struct mbrec_flow_id id;
	mbrec_flow_read_id(sk, cookie, &id);
	struct mbrec_flow_state *st = mbrec_flow_state_get(sk, &id, 1);
	if (!st)
		return 0;
	if (backoff == 0)
		st->timeouts += 1;
	else
		st->timeouts_backoff += 1;
	u32 una = 0, nxt = 0;
	MBREC_RD(una, tp->snd_una);
	MBREC_RD(nxt, tp->snd_nxt);
	mbrec_flow_tcp_event(&id, MBREC_TCP_TIMEOUT, backoff, una, nxt, state, state,
			     MBREC_PROBE_TCP_TIMEOUT);
	return 0;
}

/*
 * tcp_syn_ack_timeout(req): a request socket's SYN-ACK timer expired. The kernel counts it in
 * TCPTimeouts but there is no flow yet: one tcp TIMEOUT event, id 0, old_state
 * TCP_NEW_SYN_RECV, value = SYN-ACKs retransmitted so far (the child socket inherits them in
 * total_retrans).
 */
static __always_inline int mbrec_flow_on_synack_timeout(struct sock *req_sk)
{
	struct mbrec_flow_id id;
	mbrec_flow_read_id(req_sk, 0, &id); /* sock_common fields only: a request sock has them */
	if (!(MBREC_NETNS_OK(id.netns)) || !(MBREC_PORT_OK(id.lport, id.rport)) ||
	    !(MBREC_ADDR_OK(&id)))
		return 0;
	u8 n = 0;
	MBREC_RD(n, ((struct request_sock *)req_sk)->num_retrans);
	mbrec_flow_tcp_event(&id, MBREC_TCP_TIMEOUT, n, 0, 0, TCP_NEW_SYN_RECV, TCP_NEW_SYN_RECV,
			     MBREC_PROBE_TCP_TIMEOUT);
	return 0;
}

/* tcp_sendmsg_locked() returned ret bytes appended to the send queue. */
static __always_inline int mbrec_flow_on_write(struct sock *sk, u64 cookie, u64 requested, int ret)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct mbrec_flow_id id;
	if (ret <= 0)
		return 0;
	mbrec_flow_read_id(sk, cookie, &id);
	struct mbrec_flow_state *st = mbrec_flow_state_get(sk, &id, 1);
	if (!st)
		return 0;
	u32 write_seq = 0;
	MBREC_RD(write_seq, tp->write_seq);
	st->write_bytes += (u64)ret;
	mbrec_flow_app_wqueue(tp, st);
	mbrec_flow_sock_event(&id, MBREC_SOCK_WRITE, write_seq - (u32)ret, write_seq, (u32)ret,
			      (u32)requested, MBREC_PROBE_TCP_SENDMSG);
	return 0;
}

/* A writer blocks on a full send buffer: the send queue is at its peak now. */
static __always_inline int mbrec_flow_on_wait_memory(struct sock *sk, u64 cookie)
{
	struct mbrec_flow_state *st = mbrec_flows.lookup(&cookie);
	if (st)
		mbrec_flow_app_wqueue((struct tcp_sock *)sk, st);
	return 0;
}

/*
 * tcp_recvmsg() returned ret bytes copied (MSG_PEEK reads consume nothing: skipped). The range
 * is [copied_seq at entry, copied_seq now): it can exceed ret by the FIN a read consumed.
 */
static __always_inline int mbrec_flow_on_read(struct sock *sk, u64 cookie, u64 requested,
					      int flags, int ret, u32 seq_start)
{
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct mbrec_flow_id id;
	if (ret <= 0 || (flags & MSG_PEEK))
		return 0;
	mbrec_flow_read_id(sk, cookie, &id);
	struct mbrec_flow_state *st = mbrec_flow_state_get(sk, &id, 1);
	if (!st)
		return 0;
	u32 copied_seq = 0;
	MBREC_RD(copied_seq, tp->copied_seq);
	st->read_bytes += (u64)ret;
	mbrec_flow_sock_event(&id, MBREC_SOCK_READ, seq_start, copied_seq, (u32)ret,
			      (u32)requested, MBREC_PROBE_TCP_RECVMSG);
	return 0;
}

/* ---- raw tracepoints (the same in both attach modes) ---- */

/*
 * A state change. The ESTABLISHED transition makes Duration exact; CLOSE emits the final
 * record (called before the state changes, so every counter is final) and frees the state.
 */
static __always_inline int mbrec_flow_on_state(struct sock *sk, u64 cookie, int oldstate,
					       int newstate)
{
	u16 protocol = 0;
	struct mbrec_flow_id id;
	struct mbrec_flow_state *st;

	MBREC_RD(protocol, sk->sk_protocol);
	if (protocol != IPPROTO_TCP)
		return 0;
	mbrec_flow_read_id(sk, cookie, &id);
	if (newstate == TCP_ESTABLISHED) {
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
	/* the raw tracepoint fires after tcp_set_state released the port (skc_num = 0 at
	 * TCP_CLOSE; fentry on tcp_set_state runs before): the flow's events keep its port */
	if (!id.lport)
		id.lport = st->lport;
	mbrec_flow_tcp_event(&id, MBREC_TCP_STATE, newstate, 0, 0, oldstate, newstate,
			     MBREC_PROBE_TCP_STATE);
	if (newstate == TCP_CLOSE) {
		mbrec_flow_snapshot(sk, &id, st, MBREC_FLOW_CLOSE, MBREC_PROBE_TCP_STATE);
		mbrec_flows.delete(&id.cookie);
	}
	return 0;
}

#if MBREC_ATTACH_TCP_SET_STATE != 1 /* else fentry tcp_set_state serves the state */
/* Raw tracepoint inet_sock_set_state(const struct sock *sk, int oldstate, int newstate). */
int mbrec_flow_tp_set_state(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	return mbrec_flow_on_state(sk, mbrec_flow_cookie_of(sk), (int)ctx->args[1],
				   (int)ctx->args[2]);
}
#endif

#if MBREC_ATTACH_TCP_RETRANSMIT_SKB == 3
/* tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb) */
int mbrec_flow_tp_retransmit(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	struct sk_buff *skb = (struct sk_buff *)ctx->args[1];
	struct tcp_skb_cb *cb = (struct tcp_skb_cb *)&skb->cb[0];
	struct mbrec_flow_id id;
	u32 seq = 0, end_seq = 0;
	u16 segs = 0;
	u8 state = 0;

	mbrec_flow_read_id(sk, mbrec_flow_cookie_of(sk), &id);
	if (!mbrec_flow_state_get(sk, &id, 1))
		return 0;
	MBREC_RD(seq, cb->seq);
	MBREC_RD(end_seq, cb->end_seq);
	MBREC_RD(segs, cb->tcp_gso_segs);
	MBREC_RD(state, sk->__sk_common.skc_state);
	mbrec_flow_tcp_event(&id, MBREC_TCP_RETRANSMIT, segs ? segs : 1, seq, end_seq, state, state,
			     MBREC_PROBE_TCP_RETRANSMIT);
	return 0;
}
#endif

/*
 * On-demand snapshot (periodic and at stop), run with BPF_PROG_TEST_RUN:
 * args[0] = cookie, args[1] = reason. Returns 1 if the flow is gone (its state is dropped).
 */
int mbrec_flow_tick(struct bpf_raw_tracepoint_args *ctx)
{
	u64 cookie = ctx->args[0];
	u8 reason = (u8)ctx->args[1];
	struct mbrec_flow_state *st = mbrec_flows.lookup(&cookie);
	if (!st)
		return 1;
	struct sock *sk = (struct sock *)st->sk;
	u8 state = 0;
	MBREC_RD(state, sk->__sk_common.skc_state);
	/* A freed or reused socket no longer carries this cookie. */
	if (mbrec_flow_cookie_of(sk) != cookie || state == TCP_CLOSE) {
		mbrec_flows.delete(&cookie);
		return 1;
	}
	struct mbrec_flow_id id;
	mbrec_flow_read_id(sk, cookie, &id);
	mbrec_flow_snapshot(sk, &id, st, reason, MBREC_PROBE_FLOW_PERIODIC);
	return 0;
}

/* ---- function hooks: fentry/fexit or kprobe/kretprobe wrappers ---- */

#if MBREC_ATTACH_TCP_SENDMSG_LOCKED || MBREC_ATTACH_TCP_RECVMSG
/* Entry arguments for the return probe. Socket calls run in process context and never nest
 * within one thread. */
struct mbrec_call_args {
	u64 sk;
	u64 size;
	int flags;
	u32 seq;        /* copied_seq at tcp_recvmsg entry */
};
BPF_HASH(mbrec_flow_calls, u64, struct mbrec_call_args, 10240);

static __always_inline void mbrec_flow_read_entry(struct sock *sk, u64 len, int flags)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct mbrec_call_args a = {.sk = (u64)sk, .size = len, .flags = flags};
	MBREC_RD(a.seq, ((struct tcp_sock *)sk)->copied_seq);
	mbrec_flow_calls.update(&tid, &a);
}
#endif

/* The socket's id: with fentry's BTF socket pointer the kernel hands out the cookie, creating
 * it if needed (MBREC_SOCK_COOKIE, fentry builds only); a kprobe cannot make the kernel create
 * one, so there the id is mbrec_sock_id(): the socket's address, whose state is dropped at
 * TCP_CLOSE, before reuse. */
#if MBREC_SOCK_COOKIE
#define MBREC_FLOW_COOKIE(sk) bpf_get_socket_cookie(sk)
#else
#define MBREC_FLOW_COOKIE(sk) mbrec_sock_id(sk)
#endif

/* fentry/fexit wrappers (MBREC_ATTACH_<HOOK> == 1) */

#if MBREC_ATTACH_TCP_SET_STATE == 1
/* fentry tcp_set_state(sk, state): same points as the tracepoint, but with a BTF pointer, so
 * the flow gets its cookie at its first transition rather than whenever someone asks. */
KFUNC_PROBE(tcp_set_state, struct sock *sk, int state)
{
	u8 old = 0;
	MBREC_RD(old, sk->__sk_common.skc_state);
	return mbrec_flow_on_state(sk, MBREC_FLOW_COOKIE(sk), old, state);
}
#endif
#if MBREC_ATTACH_TCP_ACK == 1
KRETFUNC_PROBE(tcp_ack, struct sock *sk, const struct sk_buff *skb, int flag, int ret)
{
	return mbrec_flow_on_ack_done(sk, MBREC_FLOW_COOKIE(sk), ret);
}
#endif
#if MBREC_ATTACH_TCP_ACK_UPDATE_RTT == 1
KFUNC_PROBE(tcp_ack_update_rtt, struct sock *sk, const int flag, long seq_rtt_us,
	    long sack_rtt_us, long ca_rtt_us, struct rate_sample *rs)
{
	return mbrec_flow_on_rtt(sk, MBREC_FLOW_COOKIE(sk), flag, seq_rtt_us, sack_rtt_us);
}
#endif
#if MBREC_ATTACH_TCP_ENTER_RECOVERY == 1
KFUNC_PROBE(tcp_enter_recovery, struct sock *sk, bool ece_ack)
{
	return mbrec_flow_on_recovery(sk, MBREC_FLOW_COOKIE(sk));
}
#endif
#if MBREC_ATTACH_TCP_RETRANSMIT_TIMER == 1
KFUNC_PROBE(tcp_retransmit_timer, struct sock *sk)
{
	return mbrec_flow_on_rto(sk, MBREC_FLOW_COOKIE(sk));
}
#endif
#if MBREC_ATTACH_TCP_SYN_ACK_TIMEOUT == 1
KFUNC_PROBE(tcp_syn_ack_timeout, const struct request_sock *req)
{
	return mbrec_flow_on_synack_timeout((struct sock *)req);
}
#endif
#if MBREC_ATTACH_TCP_SENDMSG_LOCKED == 1
KRETFUNC_PROBE(tcp_sendmsg_locked, struct sock *sk, struct msghdr *msg, size_t size, int ret)
{
	return mbrec_flow_on_write(sk, MBREC_FLOW_COOKIE(sk), size, ret);
}
#endif
#if MBREC_ATTACH_SK_STREAM_WAIT_MEMORY == 1
KFUNC_PROBE(sk_stream_wait_memory, struct sock *sk, long *timeo_p)
{
	return mbrec_flow_on_wait_memory(sk, MBREC_FLOW_COOKIE(sk));
}
#endif
#if MBREC_ATTACH_TCP_RECVMSG == 1
KFUNC_PROBE(tcp_recvmsg, struct sock *sk, struct msghdr *msg, size_t len, int flags,
	    int *addr_len)
{
	mbrec_flow_read_entry(sk, len, flags);
	return 0;
}

KRETFUNC_PROBE(tcp_recvmsg, struct sock *sk, struct msghdr *msg, size_t len, int flags,
	       int *addr_len, int ret)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct mbrec_call_args *a = mbrec_flow_calls.lookup(&tid);
	if (!a)
		return 0;
	u32 seq = a->seq;
	mbrec_flow_calls.delete(&tid);
	return mbrec_flow_on_read(sk, MBREC_FLOW_COOKIE(sk), len, flags, ret, seq);
}
#endif

/* kprobe/kretprobe wrappers (MBREC_ATTACH_<HOOK> == 2): entry arguments are stashed for the
 * return probe */

#if MBREC_ATTACH_TCP_ACK == 2
/*
 * tcp_ack can be interrupted on its CPU by a softirq running tcp_ack for another socket, so
 * the entry's socket is kept on a small per-CPU stack that nests the same way.
 */
#define MBREC_ACK_DEPTH 4
struct mbrec_ack_stack {
	u64 sk[MBREC_ACK_DEPTH];
	u32 depth;
	u32 pad;
};
BPF_PERCPU_ARRAY(mbrec_flow_ack_stack, struct mbrec_ack_stack, 1);

int mbrec_flow_kp_tcp_ack(struct pt_regs *ctx, struct sock *sk)
{
	u32 zero = 0;
	struct mbrec_ack_stack *s = mbrec_flow_ack_stack.lookup(&zero);
	if (!s)
		return 0;
	u32 d = s->depth;
	if (d < MBREC_ACK_DEPTH)
		s->sk[d & (MBREC_ACK_DEPTH - 1)] = (u64)sk;
	s->depth = d < 2 * MBREC_ACK_DEPTH ? d + 1 : 0; /* a lost return resets, never overflows */
	return 0;
}

int mbrec_flow_kr_tcp_ack(struct pt_regs *ctx)
{
	u32 zero = 0;
	struct mbrec_ack_stack *s = mbrec_flow_ack_stack.lookup(&zero);
	if (!s || s->depth == 0)
		return 0;
	u32 d = s->depth - 1;
	s->depth = d;
	if (d >= MBREC_ACK_DEPTH)
		return 0;
	struct sock *sk = (struct sock *)s->sk[d & (MBREC_ACK_DEPTH - 1)];
	return mbrec_flow_on_ack_done(sk, MBREC_FLOW_COOKIE(sk), (int)PT_REGS_RC(ctx));
}
#endif

#if MBREC_ATTACH_TCP_ACK_UPDATE_RTT == 2
int mbrec_flow_kp_tcp_ack_update_rtt(struct pt_regs *ctx, struct sock *sk, const int flag,
				     long seq_rtt_us, long sack_rtt_us)
{
	return mbrec_flow_on_rtt(sk, MBREC_FLOW_COOKIE(sk), flag, seq_rtt_us, sack_rtt_us);
}
#endif
#if MBREC_ATTACH_TCP_ENTER_RECOVERY == 2
int mbrec_flow_kp_tcp_enter_recovery(struct pt_regs *ctx, struct sock *sk)
{
	return mbrec_flow_on_recovery(sk, MBREC_FLOW_COOKIE(sk));
}
#endif
#if MBREC_ATTACH_TCP_RETRANSMIT_TIMER == 2
int mbrec_flow_kp_tcp_retransmit_timer(struct pt_regs *ctx, struct sock *sk)
{
	return mbrec_flow_on_rto(sk, MBREC_FLOW_COOKIE(sk));
}
#endif
#if MBREC_ATTACH_TCP_SYN_ACK_TIMEOUT == 2
int mbrec_flow_kp_tcp_syn_ack_timeout(struct pt_regs *ctx, struct request_sock *req)
{
	return mbrec_flow_on_synack_timeout((struct sock *)req);
}
#endif
#if MBREC_ATTACH_SK_STREAM_WAIT_MEMORY == 2
int mbrec_flow_kp_sk_stream_wait_memory(struct pt_regs *ctx, struct sock *sk)
{
	return mbrec_flow_on_wait_memory(sk, MBREC_FLOW_COOKIE(sk));
}
#endif

#if MBREC_ATTACH_TCP_SENDMSG_LOCKED == 2
int mbrec_flow_kp_tcp_sendmsg_locked(struct pt_regs *ctx, struct sock *sk, struct msghdr *msg,
				     size_t size)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct mbrec_call_args a = {.sk = (u64)sk, .size = size};
	mbrec_flow_calls.update(&tid, &a);
	return 0;
}

int mbrec_flow_kr_tcp_sendmsg_locked(struct pt_regs *ctx)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct mbrec_call_args *a = mbrec_flow_calls.lookup(&tid);
	if (!a)
		return 0;
	struct sock *sk = (struct sock *)a->sk;
	u64 size = a->size;
	mbrec_flow_calls.delete(&tid);
	return mbrec_flow_on_write(sk, MBREC_FLOW_COOKIE(sk), size, (int)PT_REGS_RC(ctx));
}
#endif
#if MBREC_ATTACH_TCP_RECVMSG == 2
int mbrec_flow_kp_tcp_recvmsg(struct pt_regs *ctx, struct sock *sk, struct msghdr *msg, size_t len,
			      int flags)
{
	mbrec_flow_read_entry(sk, len, flags);
	return 0;
}

int mbrec_flow_kr_tcp_recvmsg(struct pt_regs *ctx)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct mbrec_call_args *a = mbrec_flow_calls.lookup(&tid);
	if (!a)
		return 0;
	struct sock *sk = (struct sock *)a->sk;
	u64 len = a->size;
	int flags = a->flags;
	u32 seq = a->seq;
	mbrec_flow_calls.delete(&tid);
	return mbrec_flow_on_read(sk, MBREC_FLOW_COOKIE(sk), len, flags, (int)PT_REGS_RC(ctx), seq);
}
#endif


#endif /* MBREC_FLOWS_FUNCTION_PROBES */
