/* SPDX-License-Identifier: GPL-2.0 */
/*
 * mbrec's flow programs: the 16 flow metrics (docs/metrics.md), TCP events and application
 * reads/writes. Pasted at the end of mbrec.bpf.c with -DMBREC_FLOWS (mbrec/recorder/flows.py:
 * BCC turns functions into programs and rewrites map calls only in the main file's text), so
 * the packet probes' filters, socket ids and socket span apply.
 *
 * One program body for every attach kind: this file holds what they share (the rings, the
 * per-flow state and its filters, the flow id, the snapshot, the handlers of state changes,
 * retransmits, recoveries, timeouts, reads and writes, the on-demand tick program); the hooks
 * that feed them are in flows_function_hooks.bpf.c (fentry/fexit or kprobe/kretprobe) and
 * flows_tracepoint_hooks.bpf.c (tracepoints only), each compiled only where chosen. Every
 * kernel field is read at its BTF offset (MBREC_OFF_*: mbrec/recorder/btf.py FIELDS and
 * FLOW_FIELDS), so no kernel header is compiled.
 *
 * Compile-time switches, set by flows.py from the hooks it resolved on the running kernel, in
 * the packet probes' style (bpf/mbrec.bpf.c):
 *   MBREC_ATTACH_<HOOK>         how the hook's handler is compiled: 1 fentry/fexit, 2
 *                               kprobe/kretprobe, 3 raw tracepoint; 0 or absent: not compiled
 *                               (not traceable here, or served by another hook)
 *   MBREC_FLOW_SAMPLE=N         per-ACK snapshot on every Nth ACK of a flow (0 = none)
 *   MBREC_FLOW_RTT_EVENTS       also emit one tcp event per raw RTT sample (function hooks)
 *   MBREC_FLOW_MAX=N            flows tracked at once (LRU: the oldest idle one is evicted)
 *   MBREC_TP_SPAN_OFF/LEN       the part of tcp_sock a snapshot copies (flows.py)
 *
 * Hooks shared by every attach kind (raw tracepoints):
 *   state          sock:inet_sock_set_state(sk, oldstate, newstate), unless fentry
 *                  tcp_set_state serves it (MBREC_ATTACH_TCP_SET_STATE == 1)
 *   retransmits    tcp:tcp_retransmit_skb(sk, skb); totals from tp->total_retrans
 *   periodic/stop  mbrec_flow_tick, run on demand by BPF_PROG_TEST_RUN with the id of the flow
 *                  to snapshot (BCC cannot iterate a map in BPF)
 */
#ifndef MBREC_FLOWS_BPF_C
#define MBREC_FLOWS_BPF_C

#ifndef MBREC_FLOW_SAMPLE
#define MBREC_FLOW_SAMPLE 1
#endif
#ifndef MBREC_FLOW_MAX
#define MBREC_FLOW_MAX 65536
#endif
#ifndef MBREC_FLOW_RING_PAGES
#define MBREC_FLOW_RING_PAGES 256
#endif

#define MBREC_MSG_PEEK 2        /* include/linux/socket.h */

/* One ring per schema (mbrec/recorder/program.py RINGS): each holds records of one size. */
BPF_RINGBUF_OUTPUT(mbrec_flow_ring, MBREC_FLOW_RING_PAGES);
BPF_RINGBUF_OUTPUT(mbrec_tcp_ring, MBREC_FLOW_RING_PAGES);
BPF_RINGBUF_OUTPUT(mbrec_sock_ring, MBREC_FLOW_RING_PAGES);

/* A tcp_sock field at its BTF offset. */
#define TPR(dst, sk, f) RDO(dst, sk, MBREC_OFF_TP_##f)

/*
 * The hooks' reads. Loaded as BTF-typed tracepoints (MBREC_TP_BTF: every hook of a tracepoint
 * recording), a hook's sk is typed by BTF and its fields are plain loads (TPF); the tcp_sock
 * fields past struct sock through MBREC_TCP_SOCK(sk) (bpf/mbrec.bpf.c). Otherwise TPF is the
 * helper and the socket is used as it is. The on-demand tick program is never typed (its socket
 * is a number kept in the flow's state): the snapshot takes `typed` as a constant, so each
 * program keeps one of its two ways to read.
 */
#define TPT(dst, tp, f) TPF(dst, tp, MBREC_OFF_TP_##f)

/* Socket identity, read once per flow. */
struct mbrec_flow_id {
	u64 cookie;
	u32 netns;
	u16 family;
	u16 lport;
	u16 rport;
	u8 saddr[16]; /* local */
	u8 daddr[16]; /* remote */
};

/* Per-flow state that must survive between samples, keyed by the socket id. Every hook that
 * updates it runs with the socket locked (process or softirq), so plain increments suffice. */
struct mbrec_flow_state {
	u64 sk;                 /* for on-demand snapshots; checked against the id first */
	u64 established_ns;
	u64 rtt_sum_us;         /* raw RTT samples: function hooks only (no tracepoint sees them) */
	u64 read_bytes;
	u64 write_bytes;
	u32 rtt_samples;
	u32 fast_recoveries;
	u32 timeouts;
	u32 timeouts_backoff;
	u32 max_app_wqueue;
	u32 acks;
	u8 flags;
	u8 ca_state;            /* the last congestion state seen (tracepoint hooks) */
	/* The identity as read when the state was made, so the hooks that find a state need not
	 * copy the socket again: a TCP socket's addresses and ports do not change before
	 * TCP_CLOSE, where its state is freed (and where the kernel has already released the
	 * local port: the record of that transition keeps this one). */
	struct mbrec_flow_id id;
};
BPF_TABLE("lru_hash", u64, struct mbrec_flow_state, mbrec_flows, MBREC_FLOW_MAX);

static __always_inline void mbrec_flow_id_of(struct mbrec_flow_id *id, struct mbrec_pkt_event *e)
{
	id->netns = e->netns;
	id->family = e->family;
	id->lport = e->sport;
	id->rport = e->dport;
	__builtin_memcpy(id->saddr, e->saddr, 16);
	__builtin_memcpy(id->daddr, e->daddr, 16);
}

/* Addresses and ports as the packet probes read them (oriented as sent), from a copy of the
 * socket in the calling probe's slot; 0 if it is no full TCP socket (the tracepoints fire for
 * every protocol). IPv4-mapped IPv6 sockets are IPv4 flows, as in the packet probes. */
static __always_inline int mbrec_flow_read_id(struct sock *sk, u64 cookie,
					      struct mbrec_flow_id *id, u32 probe)
{
	struct mbrec_pkt_event e = {};
	__builtin_memset(id, 0, sizeof(*id));
	id->cookie = cookie;
	struct mbrec_sk_view *ks = mbrec_sk_view_of(sk, probe);
	if (!ks || !mbrec_sk_view_tcp(ks) || !mbrec_sock_tuple_view(&e, ks, 1))
		return 0;
	mbrec_flow_id_of(id, &e);
	return 1;
}

/* The packet probes' filters, decided once per flow (--cgroup: the socket's cgroup v2 id). */
static __always_inline int mbrec_flow_filters_ok(struct sock *sk, struct mbrec_flow_id *id)
{
	if (!(MBREC_NETNS_OK(id->netns)) || !(MBREC_PORT_OK(id->lport, id->rport)) ||
	    !(MBREC_ADDR_OK(id)))
		return 0;
#if MBREC_CGROUP_ID
	return mbrec_sk_cgroup_id(sk) == MBREC_CGROUP_ID;
#else
	return 1;
#endif
}

/*
 * The flow's state, made if it is new and the filters keep it (id read by the caller). A flow
 * first seen after it was established gets established_ns = now with SEEN_ESTABLISH clear: a
 * lower bound.
 */
static __always_inline struct mbrec_flow_state *
mbrec_flow_state_make(struct sock *sk, struct mbrec_flow_id *id)
{
	struct mbrec_flow_state *st = mbrec_flows.lookup(&id->cookie);
	if (st || !id->cookie)
		return st;
	if (id->family != MBREC_AF_INET && id->family != MBREC_AF_INET6)
		return NULL;
	if (!mbrec_flow_filters_ok(sk, id))
		return NULL;
	struct mbrec_flow_state fresh = {};
	fresh.sk = (u64)sk;
	/* 0 until the flow is established (a flow seen first in SYN_SENT/SYN_RECV, e.g. by the
	 * ACK of its SYN-ACK, gets the exact time at its ESTABLISHED transition) */
	u8 state = 0;
	RDO(state, sk, MBREC_OFF_SK_STATE);
	if (state != MBREC_TCP_SYN_SENT && state != MBREC_TCP_SYN_RECV)
		fresh.established_ns = bpf_ktime_get_ns();
	fresh.id = *id;
	mbrec_flows.update(&id->cookie, &fresh);
	return mbrec_flows.lookup(&id->cookie);
}

/*
 * The flow's state and its id, made if the filters keep it; NULL if not kept. Most hook runs
 * find a state (their id is then the state's); most that do not are other namespaces' sockets
 * (a tracepoint fires for every namespace), stopped by two small reads before the socket is
 * copied.
 */
static __always_inline struct mbrec_flow_state *
mbrec_flow_get(struct sock *sk, u64 cookie, struct mbrec_flow_id *id, u32 probe)
{
	struct mbrec_flow_state *st = mbrec_flows.lookup(&cookie);
	if (st) {
		*id = st->id;
		return st;
	}
	u32 netns = mbrec_tp_netns_of_sk(sk);
	if (!(MBREC_NETNS_OK(netns)))
		return NULL;
	if (!mbrec_flow_read_id(sk, cookie, id, probe))
		return NULL;
	return mbrec_flow_state_make(sk, id);
}

/* write_seq - snd_nxt, folded into the flow's maximum. */
static __always_inline u32 mbrec_flow_wqueue(struct mbrec_flow_state *st, u32 write_seq,
					     u32 snd_nxt)
{
	u32 q = write_seq - snd_nxt;
	if ((s32)q < 0)
		q = 0;
	if (q > st->max_app_wqueue)
		st->max_app_wqueue = q;
	return q;
}

static __always_inline u32 mbrec_flow_app_wqueue(struct sock *sk, struct mbrec_flow_state *st)
{
	u32 write_seq = 0, snd_nxt = 0;
	TPR(write_seq, sk, WRITE_SEQ);
	TPR(snd_nxt, sk, SND_NXT);
	return mbrec_flow_wqueue(st, write_seq, snd_nxt);
}

/* ---- the three records ---- */

/* 1 if a ring had no room for the record (counted as the probe's loss). */
static __always_inline int mbrec_flow_lost(void *ev, u32 probe)
{
	if (ev)
		return 0;
	mbrec_count_lost(probe);
	return 1;
}

/* What every record says of its socket. */
#define MBREC_FLOW_FILL_ID(ev, id) do {					\
		(ev)->sock_cookie = (id)->cookie;			\
		(ev)->netns = (id)->netns;				\
		__builtin_memcpy((ev)->saddr, (id)->saddr, 16);		\
		__builtin_memcpy((ev)->daddr, (id)->daddr, 16);		\
		(ev)->sport = (id)->lport;				\
		(ev)->dport = (id)->rport;				\
		(ev)->family = (id)->family;				\
	} while (0)

static __always_inline void mbrec_flow_tcp_event(struct mbrec_flow_id *id, u8 kind, u32 value,
						 u32 seq, u32 end_seq, u8 old_state,
						 u8 new_state, u8 probe)
{
	struct mbrec_tcp_event *ev = mbrec_tcp_ring.ringbuf_reserve(sizeof(struct mbrec_tcp_event));
	if (mbrec_flow_lost(ev, probe))
		return;
	ev->ts_ns = bpf_ktime_get_ns();
	MBREC_FLOW_FILL_ID(ev, id);
	ev->value = value;
	ev->seq = seq;
	ev->end_seq = end_seq;
	ev->kind = kind;
	ev->old_state = old_state;
	ev->new_state = new_state;
	mbrec_tcp_ring.ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

static __always_inline void mbrec_flow_sock_event(struct mbrec_flow_id *id, u8 kind, u32 seq_start,
						  u32 seq_end, u32 bytes, u32 requested, u8 probe)
{
	struct mbrec_sock_event *ev = mbrec_sock_ring.ringbuf_reserve(sizeof(struct mbrec_sock_event));
	if (mbrec_flow_lost(ev, probe))
		return;
	ev->ts_ns = bpf_ktime_get_ns();
	MBREC_FLOW_FILL_ID(ev, id);
	ev->tgid = bpf_get_current_pid_tgid() >> 32;
	ev->seq_start = seq_start;
	ev->seq_end = seq_end;
	ev->bytes = bytes;
	ev->requested = requested;
	ev->kind = kind;
	ev->pad[0] = 0;
	ev->pad[1] = 0;
	mbrec_sock_ring.ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

/* A snapshot reads some thirty tcp_sock fields: one read of the span that holds them all
 * (MBREC_TP_SPAN_OFF, MBREC_TP_SPAN_LEN) into a per-CPU buffer is one helper call instead of
 * thirty. One slot per probe id, as for the socket span in mbrec.bpf.c (a program may be
 * interrupted by another one on its CPU). SNAP, below: a field from that copy. */
struct mbrec_tp_span {
	u8 b[MBREC_TP_SPAN_LEN];
};
BPF_PERCPU_ARRAY(mbrec_tp_span_buf, struct mbrec_tp_span, MBREC_PROBE_MAX);
#define SPR_AT(off) ((off) - MBREC_TP_SPAN_OFF)

/* typed: sk is a BTF-typed hook argument; the fields are loads from it as a tcp_sock, not a
 * copy of the span. SNAP_AT: at a byte offset into the field. */
#define SNAP_AT(dst, f, k) do {								\
		if (typed)								\
			TPF(dst, tp, MBREC_OFF_TP_##f + (k));				\
		else									\
			__builtin_memcpy(&(dst), span->b + SPR_AT(MBREC_OFF_TP_##f + (k)),	\
					 sizeof(dst));					\
	} while (0)
#define SNAP(dst, f) SNAP_AT(dst, f, 0)

static __always_inline void mbrec_flow_snapshot(struct sock *sk, struct mbrec_flow_id *id,
						struct mbrec_flow_state *st, u8 reason, u8 probe,
						int typed)
{
	struct mbrec_tp_span *span = NULL;
	struct sock *tp = NULL;
	if (typed) {
		tp = MBREC_TCP_SOCK(sk);
		if (!tp)
			return;
	} else {
		u32 slot = probe;
		span = mbrec_tp_span_buf.lookup(&slot);
		if (!span || bpf_probe_read_kernel(span->b, MBREC_TP_SPAN_LEN,
						   (char *)sk + MBREC_TP_SPAN_OFF))
			return;
	}
	struct mbrec_flow_event *ev = mbrec_flow_ring.ringbuf_reserve(sizeof(struct mbrec_flow_event));
	if (mbrec_flow_lost(ev, probe))
		return;
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = bpf_ktime_get_ns();
	MBREC_FLOW_FILL_ID(ev, id);
	/* what the flow's state counts */
	ev->established_ns = st->established_ns;
	ev->rtt_sum_us = st->rtt_sum_us;
	ev->read_bytes = st->read_bytes;
	ev->write_bytes = st->write_bytes;
	ev->rtt_samples = st->rtt_samples;
	ev->fast_recoveries = st->fast_recoveries;
	ev->timeouts = st->timeouts;
	ev->timeouts_backoff = st->timeouts_backoff;
	ev->flags = st->flags;
	/* what the kernel keeps */
	SNAP(ev->bytes_sent, BYTES_SENT);
	SNAP(ev->bytes_acked, BYTES_ACKED);
	SNAP(ev->bytes_received, BYTES_RECEIVED);
	SNAP(ev->bytes_retrans, BYTES_RETRANS);
	SNAP(ev->snd_cwnd, SND_CWND);
	SNAP(ev->snd_ssthresh, SND_SSTHRESH);
	SNAP(ev->snd_wnd, SND_WND);
	SNAP(ev->rcv_wnd, RCV_WND);
	SNAP(ev->mss_cache, MSS_CACHE);
	SNAP(ev->packets_out, PACKETS_OUT);
	SNAP(ev->sacked_out, SACKED_OUT);
	SNAP(ev->lost_out, LOST_OUT);
	SNAP(ev->retrans_out, RETRANS_OUT);
	SNAP(ev->total_retrans, TOTAL_RETRANS);
	SNAP(ev->snd_una, SND_UNA);
	SNAP(ev->snd_nxt, SND_NXT);
	SNAP(ev->write_seq, WRITE_SEQ);
	SNAP(ev->rcv_nxt, RCV_NXT);
	SNAP(ev->copied_seq, COPIED_SEQ);
	/* rtt_min is a struct minmax: s[0].v, the current minimum, is its second u32 */
	SNAP_AT(ev->min_rtt_us, RTT_MIN, 4);
	/* fields of other widths, and what derives from them */
	u16 advmss = 0;
	u32 srtt8 = 0, mdev4 = 0, rate_delivered = 0, rate_interval_us = 0;
	SNAP(advmss, ADVMSS);
	SNAP(srtt8, SRTT_US);
	SNAP(mdev4, MDEV_US);
	SNAP(rate_delivered, RATE_DELIVERED);
	SNAP(rate_interval_us, RATE_INTERVAL_US);
	ev->advmss = advmss;
	ev->srtt_us = srtt8 >> 3;       /* as tcp_info's tcpi_rtt */
	ev->rttvar_us = mdev4 >> 2;     /* as tcp_info's tcpi_rttvar */
	/* tcp_packets_in_flight(): packets_out - (sacked_out + lost_out) + retrans_out */
	ev->packets_in_flight = ev->packets_out - (ev->sacked_out + ev->lost_out) + ev->retrans_out;
	ev->bytes_in_flight = ev->snd_nxt - ev->snd_una;
	ev->app_wqueue = mbrec_flow_wqueue(st, ev->write_seq, ev->snd_nxt);
	ev->max_app_wqueue = st->max_app_wqueue;
	/* tcp_info's tcpi_delivery_rate: rate_delivered * mss_cache * 1e6 / rate_interval_us */
	if (rate_interval_us)
		ev->delivery_rate = (u64)rate_delivered * ev->mss_cache * 1000000ULL / rate_interval_us;
	u8 state = 0;
	KRD(typed, state, sk, MBREC_OFF_SK_STATE);
	ev->state = state;
	ev->reason = reason;
	mbrec_flow_ring.ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

/* ---- handlers: every hook set calls these ---- */

/* An ACK (function hooks: after tcp_ack processed it; tracepoints: a segment arrived). */
static __always_inline int mbrec_flow_on_ack(struct sock *sk, u64 cookie)
{
	struct mbrec_flow_id id;
	struct mbrec_flow_state *st = mbrec_flow_get(sk, cookie, &id, MBREC_PROBE_TCP_ACK);
	if (!st)
		return 0;
	st->acks++;
	if (MBREC_FLOW_SAMPLE == 0 || st->acks % (MBREC_FLOW_SAMPLE ? MBREC_FLOW_SAMPLE : 1))
		return 0;
	mbrec_flow_snapshot(sk, &id, st, MBREC_FLOW_ACK, MBREC_PROBE_TCP_ACK, MBREC_TP_BTF);
	return 0;
}

/*
 * A state change. The ESTABLISHED transition makes Duration exact; CLOSE emits the final
 * record (called before the state changes, so every counter is final) and frees the state.
 */
static __always_inline int mbrec_flow_on_state(struct sock *sk, u64 cookie, int oldstate,
					       int newstate)
{
	struct mbrec_flow_id id;
	struct mbrec_flow_state *st = mbrec_flows.lookup(&cookie);

	if (st) {
		id = st->id;
	} else {
		/* only the ESTABLISHED transition makes a state */
		if (newstate != MBREC_TCP_ESTABLISHED)
			return 0;
		u32 netns = mbrec_tp_netns_of_sk(sk);
		if (!(MBREC_NETNS_OK(netns)))
			return 0;
		if (!mbrec_flow_read_id(sk, cookie, &id, MBREC_PROBE_TCP_STATE))
			return 0;
		st = mbrec_flow_state_make(sk, &id);
		if (!st)
			return 0;
	}
	if (newstate == MBREC_TCP_ESTABLISHED && !(st->flags & MBREC_FLOWF_SEEN_ESTABLISH)) {
		st->established_ns = bpf_ktime_get_ns();
		st->flags |= MBREC_FLOWF_SEEN_ESTABLISH;
	}
	mbrec_flow_tcp_event(&id, MBREC_TCP_STATE, newstate, 0, 0, oldstate, newstate,
			     MBREC_PROBE_TCP_STATE);
	if (newstate == MBREC_TCP_CLOSE) {
		mbrec_flow_snapshot(sk, &id, st, MBREC_FLOW_CLOSE, MBREC_PROBE_TCP_STATE,
				    MBREC_TP_BTF);
		mbrec_flows.delete(&id.cookie);
	}
	return 0;
}

/* A fast recovery began. */
static __always_inline void mbrec_flow_recovery(struct sock *sk, struct mbrec_flow_id *id,
						struct mbrec_flow_state *st)
{
	u32 n = ++st->fast_recoveries;
	u32 una = 0, nxt = 0;
	TPR(una, sk, SND_UNA);
	TPR(nxt, sk, SND_NXT);
	mbrec_flow_tcp_event(id, MBREC_TCP_RECOVERY, n, una, nxt, 0, 0,
			     MBREC_PROBE_TCP_ENTER_RECOVERY);
}

/* A retransmission timeout: the first (icsk_backoff == 0) and backed-off ones counted apart. */
static __always_inline void mbrec_flow_timeout(struct sock *sk, struct mbrec_flow_id *id,
					       struct mbrec_flow_state *st)
{
	u8 backoff = 0, state = 0;
	u32 una = 0, nxt = 0;
	RDO(backoff, sk, MBREC_OFF_ICSK_BACKOFF);
	RDO(state, sk, MBREC_OFF_SK_STATE);
	if (backoff == 0)
		st->timeouts += 1;
	else
		st->timeouts_backoff += 1;
	TPR(una, sk, SND_UNA);
	TPR(nxt, sk, SND_NXT);
	mbrec_flow_tcp_event(id, MBREC_TCP_TIMEOUT, backoff, una, nxt, state, state,
			     MBREC_PROBE_TCP_TIMEOUT);
}

/*
 * A socket call moved ret bytes: a write appended them to the send queue, [write_seq - ret,
 * write_seq); a read copied them (MSG_PEEK reads consume nothing: skipped), up to copied_seq
 * now from *seq_start (copied_seq when the read began: it can exceed ret by the FIN a read
 * consumed), or without it from copied_seq - ret.
 */
static __always_inline int mbrec_flow_on_io(struct sock *sk, u64 cookie, u8 kind, u32 requested,
					    int flags, int ret, const u32 *seq_start)
{
	struct mbrec_flow_id id;
	int write = kind == MBREC_SOCK_WRITE;
	u8 probe = write ? MBREC_PROBE_TCP_SENDMSG : MBREC_PROBE_TCP_RECVMSG;
	if (ret <= 0 || (!write && (flags & MBREC_MSG_PEEK)))
		return 0;
	struct mbrec_flow_state *st = mbrec_flow_get(sk, cookie, &id, probe);
	if (!st)
		return 0;
	struct sock *tp = MBREC_TCP_SOCK(sk);
	if (!tp)
		return 0;
	u32 end = 0;
	if (write) {
		u32 snd_nxt = 0;
		TPT(end, tp, WRITE_SEQ);
		TPT(snd_nxt, tp, SND_NXT);
		st->write_bytes += (u64)ret;
		mbrec_flow_wqueue(st, end, snd_nxt);
	} else {
		TPT(end, tp, COPIED_SEQ);
		st->read_bytes += (u64)ret;
	}
	mbrec_flow_sock_event(&id, kind, seq_start ? *seq_start : end - (u32)ret, end, (u32)ret,
			      requested, probe);
	return 0;
}

/* ---- raw tracepoints of every attach kind ---- */

#if MBREC_ATTACH_TCP_SET_STATE != 1 /* else fentry tcp_set_state serves the state */
/* sock:inet_sock_set_state(const struct sock *sk, int oldstate, int newstate) */
int mbrec_flow_tp_tcp_state(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	return mbrec_flow_on_state(sk, mbrec_tp_sock_id(sk), (int)ctx->args[1], (int)ctx->args[2]);
}
#endif

#if MBREC_ATTACH_TCP_RETRANSMIT_SKB == 3
/* tcp:tcp_retransmit_skb(const struct sock *sk, const struct sk_buff *skb, ...) */
int mbrec_flow_tp_tcp_retransmit(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	struct sk_buff *skb = (struct sk_buff *)ctx->args[1];
	struct mbrec_flow_id id;
	if (!mbrec_flow_get(sk, mbrec_tp_sock_id(sk), &id, MBREC_PROBE_TCP_RETRANSMIT))
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
#endif

/*
 * On-demand snapshot (periodic and at stop), run with BPF_PROG_TEST_RUN:
 * args[0] = socket id, args[1] = reason. Returns 1 if the flow is gone (its state is dropped).
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
	RDO(state, sk, MBREC_OFF_SK_STATE);
	/* A freed or reused socket no longer carries this id. */
	if (mbrec_sock_id(sk) != cookie || state == MBREC_TCP_CLOSE) {
		mbrec_flows.delete(&cookie);
		return 1;
	}
	struct mbrec_flow_id id = st->id;
	mbrec_flow_snapshot(sk, &id, st, reason, MBREC_PROBE_FLOW_PERIODIC, 0);
	return 0;
}

#include "flows_function_hooks.bpf.c"
#include "flows_tracepoint_hooks.bpf.c"

#endif /* MBREC_FLOWS_BPF_C */
