/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The flow programs' hooks on kernel functions: fentry/fexit (MBREC_ATTACH_<HOOK> == 1) or
 * kprobe/kretprobe (== 2) wrappers around the handlers of flows.bpf.c, pasted into it by
 * mbrec/recorder/flows.py. Kernel fields are read at BTF offsets, as everywhere.
 *
 * Where each metric comes from (the kernel is Linux 6.1; names checked in lab.md):
 *   RTT samples    tcp_ack_update_rtt(sk, flag, seq_rtt_us, sack_rtt_us, ca_rtt_us, rs):
 *                  tcp_rtt_estimator and tcp_update_rtt_min are inlined into it, so its entry
 *                  is the last traceable point that sees the raw sample. The sample the kernel
 *                  feeds to tcp_rtt_estimator is recomputed here with the kernel's own rule.
 *   fast recovery  tcp_enter_recovery entry (the kernel's TCPSackRecovery/TCPRenoRecovery).
 *   timeouts       tcp_retransmit_timer entry, counted under the kernel's TCPTimeouts rule;
 *                  tcp_syn_ack_timeout for request sockets.
 *   per-ACK        tcp_ack exit: the values after this ACK was processed.
 *   state          fentry tcp_set_state, else the raw tracepoint (flows.bpf.c).
 *   writes         tcp_sendmsg_locked exit (before release_sock runs the backlog, so the send
 *                  queue is seen at its peak); sk_stream_wait_memory entry for the peak while a
 *                  writer blocks on a full buffer.
 *   reads          tcp_recvmsg entry (copied_seq) and exit (not tcp_cleanup_rbuf: a blocking
 *                  read calls it once per wait with the running total, which double-counts).
 */

/* Kernel constants that live in .c files or in headers not compiled here. */
#define MBREC_FLAG_DATA_ACKED 0x04      /* net/ipv4/tcp_input.c */
#define MBREC_FLAG_SYN_ACKED 0x10
#define MBREC_FLAG_ACKED (MBREC_FLAG_DATA_ACKED | MBREC_FLAG_SYN_ACKED)
#define MBREC_SOCK_DEAD 0               /* enum sock_flags, include/net/sock.h */

/* The socket's id: with fentry's BTF socket pointer the kernel hands out the cookie, creating
 * it if needed (MBREC_SOCK_COOKIE, fentry builds only); a kprobe cannot make the kernel create
 * one, so there the id is mbrec_sock_id(): the socket's address, whose state is dropped at
 * TCP_CLOSE, before reuse. */
#if MBREC_SOCK_COOKIE
#define MBREC_FLOW_COOKIE(sk) bpf_get_socket_cookie(sk)
#else
#define MBREC_FLOW_COOKIE(sk) mbrec_sock_id(sk)
#endif

/* ---- handler bodies, shared by the fentry and the kprobe wrappers ---- */

#if MBREC_ATTACH_TCP_ACK_UPDATE_RTT
static __always_inline int mbrec_flow_on_rtt(struct sock *sk, u64 cookie, int flag,
					     long seq_rtt_us, long sack_rtt_us)
{
	long sample = seq_rtt_us;

	/* The sample tcp_ack_update_rtt() hands to tcp_rtt_estimator(), by its own rules:
	 * ACK timing, else SACK timing, else the timestamp echo when this ACK acked data. */
	if (sample < 0)
		sample = sack_rtt_us;
	if (sample < 0 && (flag & MBREC_FLAG_ACKED)) {
		u8 opt_bits = 0;
		u32 tsecr = 0;
		u64 mstamp = 0;
		RDO(opt_bits, sk, MBREC_OFF_TCP_SAW_TSTAMP);
		RDO(tsecr, sk, MBREC_OFF_TCP_RCV_TSECR);
		RDO(mstamp, sk, MBREC_OFF_TCP_MSTAMP);
		if ((opt_bits & MBREC_MASK_TCP_SAW_TSTAMP) && tsecr) {
			u32 delta = (u32)(mstamp / 1000) - tsecr; /* tcp_time_stamp(): ms */
			if (delta < 0x7fffffff / 1000) {
				if (!delta)
					delta = 1;
				sample = (long)delta * 1000;
			}
		}
	}
	if (sample < 0)
		return 0;
	struct mbrec_flow_id id;
	struct mbrec_flow_state *st = mbrec_flow_get(sk, cookie, &id, MBREC_PROBE_TCP_RTT);
	if (!st)
		return 0;
	st->rtt_samples += 1;
	st->rtt_sum_us += (u64)sample;
#ifdef MBREC_FLOW_RTT_EVENTS
	mbrec_flow_tcp_event(&id, MBREC_TCP_RTT_SAMPLE, (u32)sample, 0, 0, 0, 0,
			     MBREC_PROBE_TCP_RTT);
#endif
	return 0;
}
#endif

static __always_inline int mbrec_flow_on_recovery(struct sock *sk, u64 cookie)
{
	struct mbrec_flow_id id;
	struct mbrec_flow_state *st = mbrec_flow_get(sk, cookie, &id, MBREC_PROBE_TCP_ENTER_RECOVERY);
	if (st)
		mbrec_flow_recovery(sk, &id, st);
	return 0;
}

/*
 * tcp_retransmit_timer() entry. Counted exactly where the kernel counts TCPTimeouts: not for
 * a Fast Open SYN-ACK timer, not with nothing outstanding, not for the zero-window branch.
 */
static __always_inline int mbrec_flow_on_rto(struct sock *sk, u64 cookie)
{
	void *fastopen_rsk = NULL;
	u32 packets_out = 0, snd_wnd = 0;
	unsigned long flags_word = 0;
	u8 state = 0;

	RDO(fastopen_rsk, sk, MBREC_OFF_TCP_FASTOPEN_RSK);
	TPR(packets_out, sk, PACKETS_OUT);
	if (fastopen_rsk || !packets_out)
		return 0;
	TPR(snd_wnd, sk, SND_WND);
	RDO(flags_word, sk, MBREC_OFF_SK_FLAGS);
	RDO(state, sk, MBREC_OFF_SK_STATE);
	if (!snd_wnd && !(flags_word & (1UL << MBREC_SOCK_DEAD)) &&
	    state != MBREC_TCP_SYN_SENT && state != MBREC_TCP_SYN_RECV)
		return 0;
	struct mbrec_flow_id id;
	struct mbrec_flow_state *st = mbrec_flow_get(sk, cookie, &id, MBREC_PROBE_TCP_TIMEOUT);
	if (st)
		mbrec_flow_timeout(sk, &id, st);
	return 0;
}

/*
 * tcp_syn_ack_timeout(req): a request socket's SYN-ACK timer expired. The kernel counts it in
 * TCPTimeouts but there is no flow yet: one tcp TIMEOUT event, id 0, old_state
 * TCP_NEW_SYN_RECV, value = SYN-ACKs retransmitted so far (the child socket inherits them in
 * total_retrans). A request socket has the sock_common fields only: read one by one.
 */
static __always_inline int mbrec_flow_on_synack_timeout(struct sock *req_sk)
{
	struct mbrec_pkt_event e = {};
	struct mbrec_flow_id id = {};
	if (!mbrec_sock_tuple(&e, req_sk, 1))
		return 0;
	e.netns = mbrec_netns_of_sk(req_sk);
	mbrec_flow_id_of(&id, &e);
	if (!(MBREC_NETNS_OK(id.netns)) || !(MBREC_PORT_OK(id.lport, id.rport)) ||
	    !(MBREC_ADDR_OK(&id)))
		return 0;
	u8 n = 0;
	RDO(n, req_sk, MBREC_OFF_REQ_NUM_RETRANS);
	mbrec_flow_tcp_event(&id, MBREC_TCP_TIMEOUT, n, 0, 0, MBREC_TCP_NEW_SYN_RECV,
			     MBREC_TCP_NEW_SYN_RECV, MBREC_PROBE_TCP_TIMEOUT);
	return 0;
}

/* A writer blocks on a full send buffer: the send queue is at its peak now. */
static __always_inline int mbrec_flow_on_wait_memory(struct sock *sk, u64 cookie)
{
	struct mbrec_flow_state *st = mbrec_flows.lookup(&cookie);
	if (st)
		mbrec_flow_app_wqueue(sk, st);
	return 0;
}

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

static __always_inline void mbrec_flow_call_begin(struct sock *sk, u64 size, int flags, int read)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct mbrec_call_args a = {.sk = (u64)sk, .size = size, .flags = flags};
	if (read)
		TPR(a.seq, sk, COPIED_SEQ);
	mbrec_flow_calls.update(&tid, &a);
}

/* The entry's arguments, taken off the map; 0 if the entry was not seen. */
static __always_inline int mbrec_flow_call_end(struct mbrec_call_args *out)
{
	u64 tid = bpf_get_current_pid_tgid();
	struct mbrec_call_args *a = mbrec_flow_calls.lookup(&tid);
	if (!a)
		return 0;
	*out = *a;
	mbrec_flow_calls.delete(&tid);
	return 1;
}

/* A kretprobe's socket call returned ret: the socket and sizes are its entry's. */
static __always_inline int mbrec_flow_kr_io(u8 kind, int ret)
{
	struct mbrec_call_args a;
	if (!mbrec_flow_call_end(&a))
		return 0;
	struct sock *sk = (struct sock *)a.sk;
	return mbrec_flow_on_io(sk, MBREC_FLOW_COOKIE(sk), kind, (u32)a.size, a.flags, ret,
				kind == MBREC_SOCK_READ ? &a.seq : NULL);
}
#endif

/* ---- fentry/fexit wrappers (MBREC_ATTACH_<HOOK> == 1); pointers to structs not compiled
 * here are void * ---- */

#if MBREC_ATTACH_TCP_SET_STATE == 1
/* fentry tcp_set_state(sk, state): same points as the tracepoint, but with a BTF pointer, so
 * the flow gets its cookie at its first transition rather than whenever someone asks. */
KFUNC_PROBE(tcp_set_state, struct sock *sk, int state)
{
	u8 old = 0;
	RDO(old, sk, MBREC_OFF_SK_STATE);
	return mbrec_flow_on_state(sk, MBREC_FLOW_COOKIE(sk), old, state);
}
#endif
#if MBREC_ATTACH_TCP_ACK == 1
KRETFUNC_PROBE(tcp_ack, struct sock *sk, const void *skb, int flag, int ret)
{
	if (ret <= 0)           /* old or invalid ACK: nothing changed */
		return 0;
	return mbrec_flow_on_ack(sk, MBREC_FLOW_COOKIE(sk));
}
#endif
#if MBREC_ATTACH_TCP_ACK_UPDATE_RTT == 1
KFUNC_PROBE(tcp_ack_update_rtt, struct sock *sk, const int flag, long seq_rtt_us,
	    long sack_rtt_us)
{
	return mbrec_flow_on_rtt(sk, MBREC_FLOW_COOKIE(sk), flag, seq_rtt_us, sack_rtt_us);
}
#endif
#if MBREC_ATTACH_TCP_ENTER_RECOVERY == 1
KFUNC_PROBE(tcp_enter_recovery, struct sock *sk)
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
KFUNC_PROBE(tcp_syn_ack_timeout, const void *req)
{
	return mbrec_flow_on_synack_timeout((struct sock *)req);
}
#endif
#if MBREC_ATTACH_TCP_SENDMSG_LOCKED == 1
KRETFUNC_PROBE(tcp_sendmsg_locked, struct sock *sk, void *msg, u64 size, int ret)
{
	return mbrec_flow_on_io(sk, MBREC_FLOW_COOKIE(sk), MBREC_SOCK_WRITE, (u32)size, 0, ret,
				NULL);
}
#endif
#if MBREC_ATTACH_SK_STREAM_WAIT_MEMORY == 1
KFUNC_PROBE(sk_stream_wait_memory, struct sock *sk)
{
	return mbrec_flow_on_wait_memory(sk, MBREC_FLOW_COOKIE(sk));
}
#endif
#if MBREC_ATTACH_TCP_RECVMSG == 1
KFUNC_PROBE(tcp_recvmsg, struct sock *sk, void *msg, u64 len, int flags)
{
	mbrec_flow_call_begin(sk, len, flags, 1);
	return 0;
}

/* fexit sees every parameter before the return value: tcp_recvmsg has (sk, msg, len, flags,
 * addr_len) on older kernels and (sk, msg, len, flags) on newer ones; flows.py passes the
 * count from BTF. */
#if MBREC_TCP_RECVMSG_PARAMS == 4
KRETFUNC_PROBE(tcp_recvmsg, struct sock *sk, void *msg, u64 len, int flags, int ret)
#else
KRETFUNC_PROBE(tcp_recvmsg, struct sock *sk, void *msg, u64 len, int flags, void *addr_len,
	       int ret)
#endif
{
	struct mbrec_call_args a;
	if (!mbrec_flow_call_end(&a))
		return 0;
	return mbrec_flow_on_io(sk, MBREC_FLOW_COOKIE(sk), MBREC_SOCK_READ, (u32)len, flags, ret,
				&a.seq);
}
#endif

/* ---- kprobe/kretprobe wrappers (MBREC_ATTACH_<HOOK> == 2): entry arguments are stashed for
 * the return probe ---- */

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

/* The stack slot of depth d, masked in the register the access uses: after a bounds check
 * clang drops the mask as redundant, and some verifiers (sid's 7.2) then see the index in
 * another register than the one it checked, unbounded. */
static __always_inline u64 mbrec_ack_slot(u64 d)
{
	asm volatile("%0 &= %1" : "+r"(d) : "i"(MBREC_ACK_DEPTH - 1));
	return d;
}

int mbrec_flow_kp_tcp_ack(struct pt_regs *ctx, struct sock *sk)
{
	u32 zero = 0;
	struct mbrec_ack_stack *s = mbrec_flow_ack_stack.lookup(&zero);
	if (!s)
		return 0;
	u32 d = s->depth;
	if (d < MBREC_ACK_DEPTH)
		s->sk[mbrec_ack_slot(d)] = (u64)sk;
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
	struct sock *sk = (struct sock *)s->sk[mbrec_ack_slot(d)];
	if ((int)PT_REGS_RC(ctx) <= 0)  /* old or invalid ACK: nothing changed */
		return 0;
	return mbrec_flow_on_ack(sk, MBREC_FLOW_COOKIE(sk));
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
int mbrec_flow_kp_tcp_syn_ack_timeout(struct pt_regs *ctx, struct sock *req)
{
	return mbrec_flow_on_synack_timeout(req);
}
#endif
#if MBREC_ATTACH_SK_STREAM_WAIT_MEMORY == 2
int mbrec_flow_kp_sk_stream_wait_memory(struct pt_regs *ctx, struct sock *sk)
{
	return mbrec_flow_on_wait_memory(sk, MBREC_FLOW_COOKIE(sk));
}
#endif

#if MBREC_ATTACH_TCP_SENDMSG_LOCKED == 2
int mbrec_flow_kp_tcp_sendmsg_locked(struct pt_regs *ctx, struct sock *sk, void *msg, u64 size)
{
	mbrec_flow_call_begin(sk, size, 0, 0);
	return 0;
}

int mbrec_flow_kr_tcp_sendmsg_locked(struct pt_regs *ctx)
{
	return mbrec_flow_kr_io(MBREC_SOCK_WRITE, (int)PT_REGS_RC(ctx));
}
#endif
#if MBREC_ATTACH_TCP_RECVMSG == 2
int mbrec_flow_kp_tcp_recvmsg(struct pt_regs *ctx, struct sock *sk, void *msg, u64 len, int flags)
{
	mbrec_flow_call_begin(sk, len, flags, 1);
	return 0;
}

int mbrec_flow_kr_tcp_recvmsg(struct pt_regs *ctx)
{
	return mbrec_flow_kr_io(MBREC_SOCK_READ, (int)PT_REGS_RC(ctx));
}
#endif
