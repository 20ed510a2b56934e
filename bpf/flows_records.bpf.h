/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the flow group's two program sets share (flows_function_probes.bpf.c: fentry/kprobe
 * hooks with the kernel's types; flows_tracepoint_probes.bpf.c: tracepoints at BTF offsets):
 * the rings of its three record kinds (bpf/mbrec_events.h), the socket identity every record
 * carries, and the emitters of the tcp and sock records, which both fill alike. Pasted with
 * them into mbrec.bpf.c (mbrec/recorder/flows.py inline_flows: BCC rewrites map calls only in
 * the main file's text).
 */
#ifndef MBREC_FLOWS_RECORDS_BPF_H
#define MBREC_FLOWS_RECORDS_BPF_H

#ifndef MBREC_FLOW_SAMPLE
#define MBREC_FLOW_SAMPLE 1
#endif
#ifndef MBREC_FLOW_MAX
#define MBREC_FLOW_MAX 65536
#endif
#ifndef MBREC_FLOW_RING_PAGES
#define MBREC_FLOW_RING_PAGES 256
#endif

/* One ring per schema (mbrec/recorder/program.py RINGS): each holds records of one size. */
BPF_RINGBUF_OUTPUT(mbrec_flow_ring, MBREC_FLOW_RING_PAGES);
BPF_RINGBUF_OUTPUT(mbrec_tcp_ring, MBREC_FLOW_RING_PAGES);
BPF_RINGBUF_OUTPUT(mbrec_sock_ring, MBREC_FLOW_RING_PAGES);

/* Socket identity, read once per event. */
struct mbrec_flow_id {
	u64 cookie;
	u32 netns;
	u16 family;
	u16 lport;
	u16 rport;
	u8 saddr[16]; /* local */
	u8 daddr[16]; /* remote */
};

static __always_inline void mbrec_flow_tcp_event(struct mbrec_flow_id *id, u8 kind, u32 value,
						 u32 seq, u32 end_seq, u8 old_state,
						 u8 new_state, u8 probe)
{
	struct mbrec_tcp_event *ev = mbrec_tcp_ring.ringbuf_reserve(sizeof(struct mbrec_tcp_event));
	if (!ev) {
		mbrec_count_lost(probe);
		return;
	}
	ev->ts_ns = bpf_ktime_get_ns();
	ev->sock_cookie = id->cookie;
	ev->netns = id->netns;
	ev->value = value;
	ev->seq = seq;
	ev->end_seq = end_seq;
	__builtin_memcpy(ev->saddr, id->saddr, 16);
	__builtin_memcpy(ev->daddr, id->daddr, 16);
	ev->sport = id->lport;
	ev->dport = id->rport;
	ev->kind = kind;
	ev->old_state = old_state;
	ev->new_state = new_state;
	ev->family = id->family;
	mbrec_tcp_ring.ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

static __always_inline void mbrec_flow_sock_event(struct mbrec_flow_id *id, u8 kind, u32 seq_start,
						  u32 seq_end, u32 bytes, u32 requested, u8 probe)
{
	struct mbrec_sock_event *ev = mbrec_sock_ring.ringbuf_reserve(sizeof(struct mbrec_sock_event));
	if (!ev) {
		mbrec_count_lost(probe);
		return;
	}
	ev->ts_ns = bpf_ktime_get_ns();
	ev->sock_cookie = id->cookie;
	ev->netns = id->netns;
	ev->tgid = bpf_get_current_pid_tgid() >> 32;
	ev->seq_start = seq_start;
	ev->seq_end = seq_end;
	ev->bytes = bytes;
	ev->requested = requested;
	__builtin_memcpy(ev->saddr, id->saddr, 16);
	__builtin_memcpy(ev->daddr, id->daddr, 16);
	ev->sport = id->lport;
	ev->dport = id->rport;
	ev->kind = kind;
	ev->family = id->family;
	ev->pad[0] = 0;
	ev->pad[1] = 0;
	mbrec_sock_ring.ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

#endif /* MBREC_FLOWS_RECORDS_BPF_H */
