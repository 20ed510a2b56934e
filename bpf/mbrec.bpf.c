/* SPDX-License-Identifier: GPL-2.0 */
/*
 * mbrec's one BPF program (compiled by BCC; kernel headers make up most of the compile time,
 * so everything goes into this one compilation unit).
 *
 * Packet probes: each hit writes one struct mbrec_pkt_event (bpf/mbrec_events.h) into the ring
 * buffer mbrec_pkt_ring with BPF_RB_NO_WAKEUP; user space drains it in bulk. A full ring is
 * counted per probe in mbrec_lost, never silent.
 *
 * Everything the recorder decides at start is a -D constant (mbrec/recorder/program.py):
 *   MBREC_ATTACH_<PROBE>   0 = not compiled, 1 = fentry (KFUNC_PROBE), 2 = kprobe, 3 = raw
 *                          tracepoint (the stable-ABI probe set at the end of this file). BCC
 *                          attaches every KFUNC_PROBE at load, so only the chosen kind is compiled.
 *   MBREC_FN_<PROBE>       the kernel function a fentry probe attaches to (kprobes are attached
 *                          by name from Python).
 *   MBREC_IP_RCV_CORE      1: the IP receive probe is ip_rcv_core(skb, net), which both
 *                          ip_rcv and ip_list_rcv call; 0: ip_rcv and ip_list_rcv themselves.
 *   MBREC_IP6_RCV_CORE     the same for IPv6: ip6_rcv_core(skb, dev, net), or ipv6_rcv and
 *                          ipv6_list_rcv. IP6_QUEUE_XMIT, IP6_RCV and TCP_V6_RCV are the IPv6
 *                          functions of the IP send, IP receive and TCP receive layers: they
 *                          record as those layers (same probe ids).
 *   MBREC_SOCK_COOKIE      1: the send probes call bpf_get_socket_cookie() (fentry only on
 *                          6.1: kprobe programs lack the helper), other probes read the cookie
 *                          the kernel then holds in sk->sk_cookie; 0: the sock address is the id.
 *   MBREC_NETNS_OK(ns), MBREC_PORT_OK(sport, dport), MBREC_ADDR_OK(e): filter expressions.
 *   MBREC_CGROUP_ID        keep only flows of sockets in this cgroup (v2 id).
 *   MBREC_SAMPLE_BITS      keep 1/2^N packets by mbrec_sample_hash() (bpf/mbrec_hash.h).
 *   MBREC_RINGBUF_PAGES    ring size in pages (a power of two).
 *   MBREC_FLOWS            compile the flow programs (bpf/flows.bpf.c) as well.
 *   MBREC_TP_BTF           1: the tracepoint programs that read kernel structs (the packet
 *                          programs of mbrec_skb_view, the flow hooks) are loaded as BTF-typed
 *                          tracepoints and read fields with plain loads (TPF).
 */
#include <uapi/linux/ptrace.h>

/*
 * Kernel struct fields are read at byte offsets: MBREC_OFF_* constants that the recorder
 * takes from the running kernel's BTF (mbrec/recorder/btf.py), so no kernel header has to be
 * compiled (they are most of BCC's compile time). Without BTF MBREC_KERNEL_HEADERS includes the
 * headers and derives the same constants with offsetof (the packet probes only: the flow
 * programs need BTF).
 */
#ifdef MBREC_KERNEL_HEADERS
#include <linux/skbuff.h>
#include <linux/netdevice.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <net/sock.h>
#include <net/tcp.h>
#define MBREC_OFF_SKB_HEAD __builtin_offsetof(struct sk_buff, head)
#define MBREC_OFF_SKB_DATA __builtin_offsetof(struct sk_buff, data)
#define MBREC_OFF_SKB_LEN __builtin_offsetof(struct sk_buff, len)
#define MBREC_OFF_SKB_END __builtin_offsetof(struct sk_buff, end)
#define MBREC_OFF_SKB_NETWORK_HEADER __builtin_offsetof(struct sk_buff, network_header)
#define MBREC_OFF_SKB_TRANSPORT_HEADER __builtin_offsetof(struct sk_buff, transport_header)
#define MBREC_OFF_SKB_PROTOCOL __builtin_offsetof(struct sk_buff, protocol)
#define MBREC_OFF_SKB_SK __builtin_offsetof(struct sk_buff, sk)
#define MBREC_OFF_SKB_DEV __builtin_offsetof(struct sk_buff, dev)
#define MBREC_OFF_SKB_IIF __builtin_offsetof(struct sk_buff, skb_iif)
#define MBREC_OFF_SKB_CB __builtin_offsetof(struct sk_buff, cb)
#define MBREC_OFF_SKB_LIST __builtin_offsetof(struct sk_buff, list)
#define MBREC_OFF_SK_NET __builtin_offsetof(struct sock, __sk_common.skc_net)
#define MBREC_OFF_SK_STATE __builtin_offsetof(struct sock, __sk_common.skc_state)
#define MBREC_OFF_SK_FAMILY __builtin_offsetof(struct sock, __sk_common.skc_family)
#define MBREC_OFF_SK_DPORT __builtin_offsetof(struct sock, __sk_common.skc_dport)
#define MBREC_OFF_SK_NUM __builtin_offsetof(struct sock, __sk_common.skc_num)
#define MBREC_OFF_SK_DADDR __builtin_offsetof(struct sock, __sk_common.skc_daddr)
#define MBREC_OFF_SK_RCV_SADDR __builtin_offsetof(struct sock, __sk_common.skc_rcv_saddr)
#define MBREC_OFF_SK_V6_DADDR __builtin_offsetof(struct sock, __sk_common.skc_v6_daddr)
#define MBREC_OFF_SK_V6_RCV_SADDR __builtin_offsetof(struct sock, __sk_common.skc_v6_rcv_saddr)
#define MBREC_OFF_SK_COOKIE __builtin_offsetof(struct sock, __sk_common.skc_cookie)
#define MBREC_OFF_SK_PROTOCOL __builtin_offsetof(struct sock, sk_protocol)
#define MBREC_OFF_SK_TYPE __builtin_offsetof(struct sock, sk_type)
#define MBREC_OFF_SK_CGRP __builtin_offsetof(struct sock, sk_cgrp_data)
#define MBREC_OFF_DEV_NET __builtin_offsetof(struct net_device, nd_net)
#define MBREC_OFF_DEV_IFINDEX __builtin_offsetof(struct net_device, ifindex)
#define MBREC_OFF_NET_INUM __builtin_offsetof(struct net, ns.inum)
#define MBREC_OFF_SHINFO_GSO_SEGS __builtin_offsetof(struct skb_shared_info, gso_segs)
#define MBREC_OFF_CGROUP_KN __builtin_offsetof(struct cgroup, kn)
#define MBREC_OFF_KN_ID __builtin_offsetof(struct kernfs_node, id)
#define MBREC_OFF_TCB_SEQ __builtin_offsetof(struct tcp_skb_cb, seq)
#define MBREC_OFF_TCB_END_SEQ __builtin_offsetof(struct tcp_skb_cb, end_seq)
#define MBREC_OFF_TCB_TCP_FLAGS __builtin_offsetof(struct tcp_skb_cb, tcp_flags)
#define MBREC_OFF_TP_COPIED_SEQ __builtin_offsetof(struct tcp_sock, copied_seq)
#else
struct sk_buff;
struct sock;
struct net_device;
struct net;
struct list_head;
#endif

#define MBREC_HAVE_KERNEL_TYPES
#include "mbrec_events.h"
#include "mbrec_hash.h"

/* A field of a kernel object at a byte offset. */
#define RDO(dst, base, off) \
	bpf_probe_read_kernel((void *)&(dst), sizeof(dst), (const char *)(base) + (off))

#define MBREC_NTOHS(x) __builtin_bswap16(x)
#define MBREC_NTOHL(x) __builtin_bswap32(x)
#define MBREC_ETH_HLEN 14
#define MBREC_ETH_P_IP 0x0800
#define MBREC_ETH_P_IPV6 0x86DD
#define MBREC_ETH_P_8021Q 0x8100
#define MBREC_ETH_P_8021AD 0x88A8
#define MBREC_IPPROTO_TCP 6
#define MBREC_SOCK_STREAM 1

/* Wire headers, read whole and decoded here (network byte order). */
struct mbrec_iph {
	u8 vihl;
	u8 tos;
	u16 tot_len;
	u16 id;
	u16 frag_off;
	u8 ttl;
	u8 protocol;
	u16 check;
	u32 saddr;
	u32 daddr;
};
struct mbrec_ip6h {
	u32 vtc_flow;
	u16 payload_len;
	u8 nexthdr;
	u8 hop_limit;
	u8 saddr[16];
	u8 daddr[16];
};
struct mbrec_tcph {
	u16 source;
	u16 dest;
	u32 seq;
	u32 ack_seq;
	u8 doff_res;
	u8 flags;
	u16 window;
	u16 check;
	u16 urg_ptr;
};

#ifndef MBREC_RINGBUF_PAGES
#define MBREC_RINGBUF_PAGES 1024
#endif
#ifndef MBREC_NETNS_OK
#define MBREC_NETNS_OK(ns) 1
#endif
#ifndef MBREC_PORT_OK
#define MBREC_PORT_OK(sport, dport) 1
#endif
#ifndef MBREC_ADDR_OK
#define MBREC_ADDR_OK(e) 1
#endif
#ifndef MBREC_SAMPLE_BITS
#define MBREC_SAMPLE_BITS 0
#endif
#ifndef MBREC_CGROUP_ID
#define MBREC_CGROUP_ID 0
#endif
#ifndef MBREC_SOCK_COOKIE
#define MBREC_SOCK_COOKIE 0
#endif
#ifndef MBREC_IP_RCV_CORE
#define MBREC_IP_RCV_CORE 1
#endif
#ifndef MBREC_IP6_RCV_CORE
#define MBREC_IP6_RCV_CORE 1
#endif
#ifndef MBREC_TP_BTF
#define MBREC_TP_BTF 0
#endif

/* A field read by a tracepoint program (the packet programs of mbrec_tp_packet and the flow
 * programs' tracepoint hooks). Loaded as BTF-typed tracepoints (MBREC_TP_BTF,
 * mbrec/recorder/tp_btf.py), their arguments and the struct pointers read from them are typed by
 * BTF, so a field is one plain load that the verifier checks against BTF: no helper call. BCC
 * turns the dereference of a pointer it traces back to the context (through assignments, calls
 * and returns) into bpf_probe_read_kernel(); it cannot see through an asm register move, which
 * the verifier follows, so the base is moved first. Pointers these loads return are for loads
 * only: packet bytes and anything at a computed offset are still read with the helper. Raw
 * tracepoints: the helper. */
#if MBREC_TP_BTF
#define TPF(dst, base, off) do {						\
		u64 _addr;							\
		asm volatile("%0 = %1" : "=r"(_addr) : "r"(base));		\
		(dst) = *(typeof(dst) *)(_addr + (off));			\
	} while (0)
/* The tcp_sock fields past struct sock: BTF-checked loads reach them only through the socket
 * as bpf_skc_to_tcp_sock() returns it (NULL for any other socket). */
#define MBREC_TCP_SOCK(sk) ((struct sock *)bpf_skc_to_tcp_sock(sk))
#else
#define TPF(dst, base, off) RDO(dst, base, off)
#define MBREC_TCP_SOCK(sk) (sk)
#endif

/* Lost events per probe id, per CPU (summed by user space); shared by every probe group. */
BPF_PERCPU_ARRAY(mbrec_lost, u64, MBREC_PROBE_MAX);

/* One ring per schema, so every record in a ring has the same size (bulk drain). */
BPF_RINGBUF_OUTPUT(mbrec_pkt_ring, MBREC_RINGBUF_PAGES);
#ifdef MBREC_PERF_BASELINE
/* bench/microbpf_baseline.py only: the same records through a perf buffer, one wake-up and one
 * Python callback per event, as MicroBPF did. Never used by mbrec record. */
BPF_PERF_OUTPUT(mbrec_pkt_perf);
#endif

/* Flows of sockets inside the --cgroup, learned where the socket is known (send path, copy),
 * so receive probes that run before the socket lookup can still filter by cgroup. */
#if MBREC_CGROUP_ID
BPF_TABLE("lru_hash", u64, u8, mbrec_cgroup_flows, 65536);
#endif

static __always_inline void mbrec_count_lost(u32 probe)
{
	u64 *n = mbrec_lost.lookup(&probe);
	if (n)
		*n += 1;
}

/* A field read the way the caller's pointers allow: typed (a BTF-typed tracepoint program's
 * struct pointers, a constant in every caller) with a plain load (TPF), else with the helper. */
#define KRD(typed, dst, base, off) do {				\
		if (typed)						\
			TPF(dst, base, off);				\
		else							\
			RDO(dst, base, off);				\
	} while (0)

static __always_inline u32 mbrec_netns_of_net_as(struct net *net, int typed)
{
	u32 inum = 0;
	if (net)
		KRD(typed, inum, net, MBREC_OFF_NET_INUM);
	return inum;
}

static __always_inline u32 mbrec_netns_of_sk_as(struct sock *sk, int typed)
{
	struct net *net = NULL;
	if (!sk)
		return 0;
	KRD(typed, net, sk, MBREC_OFF_SK_NET);
	return mbrec_netns_of_net_as(net, typed);
}

static __always_inline u32 mbrec_netns_of_dev_as(struct net_device *dev, int typed)
{
	struct net *net = NULL;
	if (!dev)
		return 0;
	KRD(typed, net, dev, MBREC_OFF_DEV_NET);
	return mbrec_netns_of_net_as(net, typed);
}

/* The socket's id in events: see MBREC_SOCK_COOKIE above. */
static __always_inline u64 mbrec_sock_id_as(struct sock *sk, int typed)
{
	if (!sk)
		return 0;
#if MBREC_SOCK_COOKIE
	u64 cookie = 0;
	KRD(typed, cookie, sk, MBREC_OFF_SK_COOKIE);
	return cookie;
#else
	return (u64)sk;
#endif
}

/* As read through pointers of any origin, with the helper; mbrec_tp_*: by a tracepoint
 * program, from its (BTF-typed where MBREC_TP_BTF) struct pointers. */
#define mbrec_netns_of_net(net) mbrec_netns_of_net_as(net, 0)
#define mbrec_netns_of_sk(sk) mbrec_netns_of_sk_as(sk, 0)
#define mbrec_netns_of_dev(dev) mbrec_netns_of_dev_as(dev, 0)
#define mbrec_sock_id(sk) mbrec_sock_id_as(sk, 0)
#define mbrec_tp_netns_of_net(net) mbrec_netns_of_net_as(net, MBREC_TP_BTF)
#define mbrec_tp_netns_of_sk(sk) mbrec_netns_of_sk_as(sk, MBREC_TP_BTF)
#define mbrec_tp_netns_of_dev(dev) mbrec_netns_of_dev_as(dev, MBREC_TP_BTF)
#define mbrec_tp_sock_id(sk) mbrec_sock_id_as(sk, MBREC_TP_BTF)

/* Full sockets only have the fields past sock_common (request and timewait socks do not). */
static __always_inline int mbrec_sk_fullsock(struct sock *sk)
{
	u8 state = 0;
	RDO(state, sk, MBREC_OFF_SK_STATE);
	return state != MBREC_TCP_TIME_WAIT && state != MBREC_TCP_NEW_SYN_RECV;
}

#if MBREC_CGROUP_ID
/* The socket's cgroup v2 id (--cgroup). */
static __always_inline u64 mbrec_sk_cgroup_id(struct sock *sk)
{
	void *cg = NULL, *kn = NULL;
	u64 id = 0;
	RDO(cg, sk, MBREC_OFF_SK_CGRP); /* sock_cgroup_data.cgroup is its first field */
	if (cg)
		RDO(kn, cg, MBREC_OFF_CGROUP_KN);
	if (kn)
		RDO(id, kn, MBREC_OFF_KN_ID);
	return id;
}
#endif

static __always_inline struct sock *mbrec_skb_sk(struct sk_buff *skb)
{
	struct sock *sk = NULL;
	RDO(sk, skb, MBREC_OFF_SKB_SK);
	return sk;
}

static __always_inline struct net_device *mbrec_skb_dev(struct sk_buff *skb)
{
	struct net_device *dev = NULL;
	RDO(dev, skb, MBREC_OFF_SKB_DEV);
	return dev;
}

static __always_inline unsigned char *mbrec_skb_head(struct sk_buff *skb)
{
	unsigned char *head = NULL;
	RDO(head, skb, MBREC_OFF_SKB_HEAD);
	return head;
}

static __always_inline u16 mbrec_gso_segs(struct sk_buff *skb, unsigned char *head)
{
	u32 end = 0; /* an offset from head on 64-bit kernels (NET_SKBUFF_DATA_USES_OFFSET) */
	u16 segs = 0;
	RDO(end, skb, MBREC_OFF_SKB_END);
	RDO(segs, head + end, MBREC_OFF_SHINFO_GSO_SEGS);
	return segs ? segs : 1;
}

static __always_inline void mbrec_init(struct mbrec_pkt_event *e, u8 probe, struct sk_buff *skb)
{
	e->ts_ns = bpf_ktime_get_ns();
	e->probe = probe;
	e->cpu = bpf_get_smp_processor_id();
	e->skb = (u64)skb;
}

/* Ports, seq, ack, flags and payload length from a TCP header; payload = l4_len - doff*4. */
static __always_inline int mbrec_parse_tcp(struct mbrec_pkt_event *e, unsigned char *th_ptr,
					   int l4_len)
{
	struct mbrec_tcph th;
	if (bpf_probe_read_kernel(&th, sizeof(th), th_ptr))
		return 0;
	int thlen = (th.doff_res >> 4) * 4;
	e->sport = MBREC_NTOHS(th.source);
	e->dport = MBREC_NTOHS(th.dest);
	e->seq = MBREC_NTOHL(th.seq);
	e->ack = MBREC_NTOHL(th.ack_seq);
	e->tcp_flags = th.flags;
	int len = l4_len - thlen;
	e->len = len > 0 ? len : 0;
	e->end_seq = e->seq + e->len + !!(e->tcp_flags & MBREC_TCP_SYN) +
		     !!(e->tcp_flags & MBREC_TCP_FIN);
	return 1;
}

/* An IPv4 or IPv6 packet at ip (ethertype from the caller); 0 if it is not a TCP segment. */
static __always_inline int mbrec_parse_ip(struct mbrec_pkt_event *e, unsigned char *ip,
					  u16 eth_proto)
{
	if (eth_proto == MBREC_ETH_P_IP) {
		struct mbrec_iph iph;
		if (bpf_probe_read_kernel(&iph, sizeof(iph), ip))
			return 0;
		if ((iph.vihl >> 4) != 4 || iph.protocol != MBREC_IPPROTO_TCP)
			return 0;
		if (MBREC_NTOHS(iph.frag_off) & 0x1fff) /* a non-first fragment has no TCP header */
			return 0;
		int ihl = (iph.vihl & 0x0f) * 4;
		e->family = MBREC_AF_INET;
		__builtin_memcpy(e->saddr, &iph.saddr, 4);
		__builtin_memcpy(e->daddr, &iph.daddr, 4);
		e->ip_id = MBREC_NTOHS(iph.id);
		return mbrec_parse_tcp(e, ip + ihl, (int)MBREC_NTOHS(iph.tot_len) - ihl);
	}
	if (eth_proto == MBREC_ETH_P_IPV6) {
		struct mbrec_ip6h ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), ip))
			return 0;
		if (ip6.nexthdr != MBREC_IPPROTO_TCP) /* extension headers: not followed */
			return 0;
		e->family = MBREC_AF_INET6;
		__builtin_memcpy(e->saddr, ip6.saddr, 16);
		__builtin_memcpy(e->daddr, ip6.daddr, 16);
		return mbrec_parse_tcp(e, ip + sizeof(ip6), (int)MBREC_NTOHS(ip6.payload_len));
	}
	return 0;
}

/* Addresses and ports from a socket, oriented as a packet the socket sends (out=1) or
 * receives (out=0). IPv4-mapped IPv6 sockets (a v6 listener accepting IPv4) count as IPv4. */
static __always_inline int mbrec_sock_tuple(struct mbrec_pkt_event *e, struct sock *sk, int out)
{
	u16 family = 0, dport = 0, num = 0;
	RDO(family, sk, MBREC_OFF_SK_FAMILY);
	RDO(dport, sk, MBREC_OFF_SK_DPORT);
	RDO(num, sk, MBREC_OFF_SK_NUM);
	u8 *local = out ? e->saddr : e->daddr;
	u8 *remote = out ? e->daddr : e->saddr;
	if (family == MBREC_AF_INET6) {
		u32 w[4] = {};
		RDO(w, sk, MBREC_OFF_SK_V6_DADDR);
		if (w[0] == 0 && w[1] == 0 && w[2] == 0xffff0000U) /* ::ffff:a.b.c.d */
			family = MBREC_AF_INET;
	}
	if (family == MBREC_AF_INET) {
		e->family = MBREC_AF_INET;
		bpf_probe_read_kernel(local, 4, (char *)sk + MBREC_OFF_SK_RCV_SADDR);
		bpf_probe_read_kernel(remote, 4, (char *)sk + MBREC_OFF_SK_DADDR);
	} else if (family == MBREC_AF_INET6) {
		e->family = MBREC_AF_INET6;
		bpf_probe_read_kernel(local, 16, (char *)sk + MBREC_OFF_SK_V6_RCV_SADDR);
		bpf_probe_read_kernel(remote, 16, (char *)sk + MBREC_OFF_SK_V6_DADDR);
	} else {
		return 0;
	}
	e->sport = out ? num : MBREC_NTOHS(dport);
	e->dport = out ? MBREC_NTOHS(dport) : num;
	return 1;
}

static __always_inline u32 mbrec_event_flow_hash(struct mbrec_pkt_event *e)
{
	return mbrec_flow_hash((u32 *)e->saddr, e->sport, (u32 *)e->daddr, e->dport);
}

/* Port, address, cgroup and sampling filters, then the ring. sk: the packet's socket if known;
 * seqkey: the sequence part of the sampling hash (bpf/mbrec_hash.h). */
static __always_inline int mbrec_submit_key(void *ctx, struct mbrec_pkt_event *e, struct sock *sk,
					    u32 seqkey)
{
	if (!(MBREC_PORT_OK(e->sport, e->dport)))
		return 0;
	if (!(MBREC_ADDR_OK(e)))
		return 0;
#if MBREC_SAMPLE_BITS || MBREC_CGROUP_ID
	u32 flow = mbrec_event_flow_hash(e);
#endif
#if MBREC_SAMPLE_BITS
	if (mbrec_sample_hash(flow, seqkey) >> (32 - MBREC_SAMPLE_BITS))
		return 0;
#endif
#if MBREC_CGROUP_ID
	{
		u64 key = ((u64)e->netns << 32) | flow;
		if (sk && mbrec_sk_fullsock(sk)) {
			if (mbrec_sk_cgroup_id(sk) != MBREC_CGROUP_ID)
				return 0;
			u8 one = 1;
			mbrec_cgroup_flows.update(&key, &one);
		} else if (!mbrec_cgroup_flows.lookup(&key)) {
			return 0;
		}
	}
#endif
#ifdef MBREC_PERF_BASELINE
	mbrec_pkt_perf.perf_submit(ctx, e, sizeof(*e));
#else
	if (mbrec_pkt_ring.ringbuf_output(e, sizeof(*e), BPF_RB_NO_WAKEUP))
		mbrec_count_lost(e->probe);
#endif
	return 0;
}

/* The sampling key of a packet: seq if it occupies sequence space, else ack (a pure ACK). */
static __always_inline int mbrec_submit(void *ctx, struct mbrec_pkt_event *e, struct sock *sk)
{
	int occupies = e->len || (e->tcp_flags & (MBREC_TCP_SYN | MBREC_TCP_FIN));
	return mbrec_submit_key(ctx, e, sk, occupies ? e->seq : e->ack);
}

/* ---- packet probes: one static handler each, wrapped below as fentry or kprobe ---- */

/* send 1: the TCP header is not built yet: seq/end_seq/flags from the control block,
 * ack = rcv_nxt (the argument the kernel will write), addresses from the socket. */
static __always_inline int mbrec_on_tcp_transmit_skb(void *ctx, struct sock *sk,
						     struct sk_buff *skb, u32 rcv_nxt, u64 cookie)
{
	struct mbrec_pkt_event e = {};
	e.netns = mbrec_netns_of_sk(sk);
	if (!(MBREC_NETNS_OK(e.netns)))
		return 0;
	if (!mbrec_sock_tuple(&e, sk, 1))
		return 0;
	mbrec_init(&e, MBREC_PROBE_TCP_TRANSMIT_SKB, skb);
	char *cb = (char *)skb + MBREC_OFF_SKB_CB;
	RDO(e.seq, cb, MBREC_OFF_TCB_SEQ);
	RDO(e.end_seq, cb, MBREC_OFF_TCB_END_SEQ);
	RDO(e.tcp_flags, cb, MBREC_OFF_TCB_TCP_FLAGS);
	RDO(e.len, skb, MBREC_OFF_SKB_LEN);
	e.ack = rcv_nxt;
	e.gso_segs = mbrec_gso_segs(skb, mbrec_skb_head(skb));
	e.sock_cookie = cookie ? cookie : mbrec_sock_id(sk);
	return mbrec_submit(ctx, &e, sk);
}

/* send 2: TCP header at transport_header; the IP header is built inside this function. */
static __always_inline int mbrec_on_ip_queue_xmit(void *ctx, struct sock *sk, struct sk_buff *skb,
						  u64 cookie)
{
	struct mbrec_pkt_event e = {};
	e.netns = mbrec_netns_of_sk(sk);
	if (!(MBREC_NETNS_OK(e.netns)))
		return 0;
	u16 proto = 0;
	RDO(proto, sk, MBREC_OFF_SK_PROTOCOL);
	if (proto != MBREC_IPPROTO_TCP)
		return 0;
	if (!mbrec_sock_tuple(&e, sk, 1))
		return 0;
	unsigned char *head = mbrec_skb_head(skb);
	u16 th_off = 0;
	u32 skb_len = 0;
	RDO(th_off, skb, MBREC_OFF_SKB_TRANSPORT_HEADER);
	RDO(skb_len, skb, MBREC_OFF_SKB_LEN);
	if (!mbrec_parse_tcp(&e, head + th_off, skb_len))
		return 0;
	mbrec_init(&e, MBREC_PROBE_IP_QUEUE_XMIT, skb);
	e.gso_segs = mbrec_gso_segs(skb, head);
	e.sock_cookie = cookie ? cookie : mbrec_sock_id(sk);
	return mbrec_submit(ctx, &e, sk);
}

/* An skb whose network header is set (device layers, IP receive, TCP receive). */
static __always_inline int mbrec_on_l3_skb(void *ctx, u8 probe, struct sk_buff *skb, u32 netns,
					   u32 ifindex)
{
	struct mbrec_pkt_event e = {};
	u16 proto = 0;
	RDO(proto, skb, MBREC_OFF_SKB_PROTOCOL);
	u16 eth_proto = MBREC_NTOHS(proto);
	if (eth_proto != MBREC_ETH_P_IP && eth_proto != MBREC_ETH_P_IPV6)
		return 0;
	e.netns = netns;
	if (!(MBREC_NETNS_OK(e.netns)))
		return 0;
	unsigned char *head = mbrec_skb_head(skb);
	u16 nh = 0;
	RDO(nh, skb, MBREC_OFF_SKB_NETWORK_HEADER);
	if (!mbrec_parse_ip(&e, head + nh, eth_proto))
		return 0;
	mbrec_init(&e, probe, skb);
	e.ifindex = ifindex;
	e.gso_segs = mbrec_gso_segs(skb, head);
	struct sock *sk = mbrec_skb_sk(skb);
	e.sock_cookie = mbrec_sock_id(sk);
	return mbrec_submit(ctx, &e, sk);
}

static __always_inline int mbrec_on_dev_xmit(void *ctx, u8 probe, struct sk_buff *skb,
					     struct net_device *dev)
{
	int ifindex = 0;
	if (!dev)
		dev = mbrec_skb_dev(skb);
	if (dev)
		RDO(ifindex, dev, MBREC_OFF_DEV_IFINDEX);
	return mbrec_on_l3_skb(ctx, probe, skb, mbrec_netns_of_dev(dev), ifindex);
}

/* receive 1: skb->data is the MAC header here (eth_type_trans pulls it); skb->dev is not set
 * yet, the device is the argument. Follows one 802.1Q/802.1ad tag. */
static __always_inline int mbrec_on_eth_type_trans(void *ctx, struct sk_buff *skb,
						   struct net_device *dev)
{
	struct mbrec_pkt_event e = {};
	unsigned char *data = NULL;
	RDO(data, skb, MBREC_OFF_SKB_DATA);
	u16 proto = 0;
	bpf_probe_read_kernel(&proto, sizeof(proto), data + 12);
	int l3 = MBREC_ETH_HLEN;
	u16 eth_proto = MBREC_NTOHS(proto);
	if (eth_proto == MBREC_ETH_P_8021Q || eth_proto == MBREC_ETH_P_8021AD) {
		bpf_probe_read_kernel(&proto, sizeof(proto), data + 16);
		eth_proto = MBREC_NTOHS(proto);
		l3 += 4;
	}
	if (eth_proto != MBREC_ETH_P_IP && eth_proto != MBREC_ETH_P_IPV6)
		return 0;
	e.netns = mbrec_netns_of_dev(dev);
	if (!(MBREC_NETNS_OK(e.netns)))
		return 0;
	if (!mbrec_parse_ip(&e, data + l3, eth_proto))
		return 0;
	mbrec_init(&e, MBREC_PROBE_ETH_TYPE_TRANS, skb);
	RDO(e.ifindex, dev, MBREC_OFF_DEV_IFINDEX);
	e.gso_segs = mbrec_gso_segs(skb, mbrec_skb_head(skb));
	return mbrec_submit(ctx, &e, NULL);
}

static __always_inline int mbrec_on_ip_rcv(void *ctx, struct sk_buff *skb, u32 netns)
{
	int iif = 0;
	struct net_device *dev = mbrec_skb_dev(skb);
	if (dev)
		RDO(iif, dev, MBREC_OFF_DEV_IFINDEX);
	if (!netns)
		netns = mbrec_netns_of_dev(dev);
	return mbrec_on_l3_skb(ctx, MBREC_PROBE_IP_RCV, skb, netns, iif);
}

static __always_inline int mbrec_on_tcp_v4_rcv(void *ctx, struct sk_buff *skb)
{
	int iif = 0;
	RDO(iif, skb, MBREC_OFF_SKB_IIF);
	return mbrec_on_l3_skb(ctx, MBREC_PROBE_TCP_V4_RCV, skb,
			       mbrec_netns_of_dev(mbrec_skb_dev(skb)), iif);
}

/* receive 4: the copy to the application. Called for every kind of socket: TCP only.
 * seq/end_seq are the bytes this call copies ([cb->seq + offset, + size)), a sub-range of the
 * skb when a read takes part of it; addresses from the socket (oriented as received). */
static __always_inline int mbrec_on_skb_copy_datagram_iter(void *ctx, struct sk_buff *skb,
							   int offset, int size)
{
	struct sock *sk = mbrec_skb_sk(skb);
	if (!sk || !mbrec_sk_fullsock(sk))
		return 0;
	u16 proto = 0, type = 0;
	RDO(proto, sk, MBREC_OFF_SK_PROTOCOL);
	RDO(type, sk, MBREC_OFF_SK_TYPE);
	if (proto != MBREC_IPPROTO_TCP || type != MBREC_SOCK_STREAM)
		return 0;
	struct mbrec_pkt_event e = {};
	e.netns = mbrec_netns_of_sk(sk);
	if (!(MBREC_NETNS_OK(e.netns)))
		return 0;
	if (!mbrec_sock_tuple(&e, sk, 0))
		return 0;
	mbrec_init(&e, MBREC_PROBE_SKB_COPY_DATAGRAM_ITER, skb);
	u32 seq = 0;
	RDO(seq, (char *)skb + MBREC_OFF_SKB_CB, MBREC_OFF_TCB_SEQ);
	/* ack, flags from the TCP header the skb arrived with (still in its head) */
	unsigned char *head = mbrec_skb_head(skb);
	u16 th_off = 0;
	RDO(th_off, skb, MBREC_OFF_SKB_TRANSPORT_HEADER);
	struct mbrec_tcph th;
	if (th_off != 0xffff && !bpf_probe_read_kernel(&th, sizeof(th), head + th_off)) {
		e.ack = MBREC_NTOHL(th.ack_seq);
		e.tcp_flags = th.flags;
	}
	e.seq = seq + offset;
	e.len = size > 0 ? size : 0;
	e.end_seq = e.seq + e.len;
	RDO(e.ifindex, skb, MBREC_OFF_SKB_IIF);
	e.gso_segs = mbrec_gso_segs(skb, head);
	e.sock_cookie = mbrec_sock_id(sk);
	/* sampled on the skb's first byte, as the layers below saw it */
	return mbrec_submit_key(ctx, &e, sk, seq);
}

/* ---- wrappers: each probe compiled as fentry (1) or kprobe (2), never both ---- */

/* Expands fn (a -D name) before KFUNC_PROBE pastes it into "kfunc__<fn>". */
#define MBREC_KFUNC(fn, args...) KFUNC_PROBE(fn, args)

#if MBREC_SOCK_COOKIE
#define MBREC_COOKIE(sk) bpf_get_socket_cookie(sk)
#else
#define MBREC_COOKIE(sk) 0
#endif

#if MBREC_ATTACH_TCP_TRANSMIT_SKB == 1
MBREC_KFUNC(MBREC_FN_TCP_TRANSMIT_SKB, struct sock *sk, struct sk_buff *skb, int clone_it,
	    unsigned int gfp_mask, u32 rcv_nxt)
{
	return mbrec_on_tcp_transmit_skb(ctx, sk, skb, rcv_nxt, MBREC_COOKIE(sk));
}
#elif MBREC_ATTACH_TCP_TRANSMIT_SKB == 2
int mbrec_kp_tcp_transmit_skb(struct pt_regs *ctx, struct sock *sk, struct sk_buff *skb,
			      int clone_it, unsigned int gfp_mask, u32 rcv_nxt)
{
	return mbrec_on_tcp_transmit_skb(ctx, sk, skb, rcv_nxt, 0);
}
#endif

#if MBREC_ATTACH_IP_QUEUE_XMIT == 1
MBREC_KFUNC(MBREC_FN_IP_QUEUE_XMIT, struct sock *sk, struct sk_buff *skb)
{
	return mbrec_on_ip_queue_xmit(ctx, sk, skb, MBREC_COOKIE(sk));
}
#elif MBREC_ATTACH_IP_QUEUE_XMIT == 2
int mbrec_kp_ip_queue_xmit(struct pt_regs *ctx, struct sock *sk, struct sk_buff *skb)
{
	return mbrec_on_ip_queue_xmit(ctx, sk, skb, 0);
}
#endif

#if MBREC_ATTACH_DEV_QUEUE_XMIT == 1
MBREC_KFUNC(MBREC_FN_DEV_QUEUE_XMIT, struct sk_buff *skb)
{
	return mbrec_on_dev_xmit(ctx, MBREC_PROBE_DEV_QUEUE_XMIT, skb, NULL);
}
#elif MBREC_ATTACH_DEV_QUEUE_XMIT == 2
int mbrec_kp_dev_queue_xmit(struct pt_regs *ctx, struct sk_buff *skb)
{
	return mbrec_on_dev_xmit(ctx, MBREC_PROBE_DEV_QUEUE_XMIT, skb, NULL);
}
#endif

/* With software GSO the driver gets a list of segments; only its head is recorded (veth and
 * virtio-net take TSO skbs whole, so the lab never sees one). */
#if MBREC_ATTACH_DEV_HARD_START_XMIT == 1
MBREC_KFUNC(MBREC_FN_DEV_HARD_START_XMIT, struct sk_buff *first, struct net_device *dev)
{
	return mbrec_on_dev_xmit(ctx, MBREC_PROBE_DEV_HARD_START_XMIT, first, dev);
}
#elif MBREC_ATTACH_DEV_HARD_START_XMIT == 2
int mbrec_kp_dev_hard_start_xmit(struct pt_regs *ctx, struct sk_buff *first,
				 struct net_device *dev)
{
	return mbrec_on_dev_xmit(ctx, MBREC_PROBE_DEV_HARD_START_XMIT, first, dev);
}
#endif

#if MBREC_ATTACH_ETH_TYPE_TRANS == 1
MBREC_KFUNC(MBREC_FN_ETH_TYPE_TRANS, struct sk_buff *skb, struct net_device *dev)
{
	return mbrec_on_eth_type_trans(ctx, skb, dev);
}
#elif MBREC_ATTACH_ETH_TYPE_TRANS == 2
int mbrec_kp_eth_type_trans(struct pt_regs *ctx, struct sk_buff *skb, struct net_device *dev)
{
	return mbrec_on_eth_type_trans(ctx, skb, dev);
}
#endif

/* The list receive functions (ip_list_rcv, ipv6_list_rcv) take a list of skbs, walked up to
 * MBREC_LIST_MAX; more are counted as lost. */
#define MBREC_LIST_MAX 16
static __always_inline int mbrec_on_ip_list_rcv(void *ctx, struct list_head *head)
{
	void *pos = NULL; /* list_head.next is its first field */
	RDO(pos, head, 0);
	for (int i = 0; i < MBREC_LIST_MAX; i++) {
		if (!pos || pos == (void *)head)
			return 0;
		mbrec_on_ip_rcv(ctx, (struct sk_buff *)((char *)pos - MBREC_OFF_SKB_LIST), 0);
		RDO(pos, pos, 0);
	}
	if (pos && pos != (void *)head)
		mbrec_count_lost(MBREC_PROBE_IP_RCV);
	return 0;
}

#if MBREC_IP_RCV_CORE
/* ip_rcv_core(skb, net): both receive paths (ip_rcv, ip_list_rcv) pass through it. */
#if MBREC_ATTACH_IP_RCV == 1
MBREC_KFUNC(MBREC_FN_IP_RCV, struct sk_buff *skb, struct net *net)
{
	return mbrec_on_ip_rcv(ctx, skb, mbrec_netns_of_net(net));
}
#elif MBREC_ATTACH_IP_RCV == 2
int mbrec_kp_ip_rcv(struct pt_regs *ctx, struct sk_buff *skb, struct net *net)
{
	return mbrec_on_ip_rcv(ctx, skb, mbrec_netns_of_net(net));
}
#endif
#else
/* No traceable ip_rcv_core: probe ip_rcv(skb, dev, ...) and ip_list_rcv(list, ...). */
#if MBREC_ATTACH_IP_RCV == 1
MBREC_KFUNC(MBREC_FN_IP_RCV, struct sk_buff *skb)
{
	return mbrec_on_ip_rcv(ctx, skb, 0);
}
MBREC_KFUNC(MBREC_FN_IP_LIST_RCV, struct list_head *head)
{
	return mbrec_on_ip_list_rcv(ctx, head);
}
#elif MBREC_ATTACH_IP_RCV == 2
int mbrec_kp_ip_rcv(struct pt_regs *ctx, struct sk_buff *skb)
{
	return mbrec_on_ip_rcv(ctx, skb, 0);
}
int mbrec_kp_ip_list_rcv(struct pt_regs *ctx, struct list_head *head)
{
	return mbrec_on_ip_list_rcv(ctx, head);
}
#endif
#endif

#if MBREC_ATTACH_TCP_V4_RCV == 1
MBREC_KFUNC(MBREC_FN_TCP_V4_RCV, struct sk_buff *skb)
{
	return mbrec_on_tcp_v4_rcv(ctx, skb);
}
#elif MBREC_ATTACH_TCP_V4_RCV == 2
int mbrec_kp_tcp_v4_rcv(struct pt_regs *ctx, struct sk_buff *skb)
{
	return mbrec_on_tcp_v4_rcv(ctx, skb);
}
#endif

/* IPv6: the IP send layer. Its fallback, ip6_xmit, also sends SYN-ACKs (on the listener, for a
 * request socket's skb) and RSTs/timewait ACKs (on the per-netns control socket): the socket's
 * addresses are not the packet's there, so only an skb the socket owns is recorded. */
#if MBREC_ATTACH_IP6_QUEUE_XMIT == 1
MBREC_KFUNC(MBREC_FN_IP6_QUEUE_XMIT, struct sock *sk, struct sk_buff *skb)
{
	if (mbrec_skb_sk(skb) != sk)
		return 0;
	return mbrec_on_ip_queue_xmit(ctx, sk, skb, MBREC_COOKIE(sk));
}
#elif MBREC_ATTACH_IP6_QUEUE_XMIT == 2
int mbrec_kp_ip6_queue_xmit(struct pt_regs *ctx, struct sock *sk, struct sk_buff *skb)
{
	if (mbrec_skb_sk(skb) != sk)
		return 0;
	return mbrec_on_ip_queue_xmit(ctx, sk, skb, 0);
}
#endif

/* IPv6: the IP receive layer, ip6_rcv_core(skb, dev, net) on both paths, else ipv6_rcv(skb, dev,
 * ...) and ipv6_list_rcv(list, ...). */
#if MBREC_IP6_RCV_CORE
#if MBREC_ATTACH_IP6_RCV == 1
MBREC_KFUNC(MBREC_FN_IP6_RCV, struct sk_buff *skb, struct net_device *dev, struct net *net)
{
	return mbrec_on_ip_rcv(ctx, skb, mbrec_netns_of_net(net));
}
#elif MBREC_ATTACH_IP6_RCV == 2
int mbrec_kp_ip6_rcv(struct pt_regs *ctx, struct sk_buff *skb, struct net_device *dev,
		     struct net *net)
{
	return mbrec_on_ip_rcv(ctx, skb, mbrec_netns_of_net(net));
}
#endif
#else
#if MBREC_ATTACH_IP6_RCV == 1
MBREC_KFUNC(MBREC_FN_IP6_RCV, struct sk_buff *skb)
{
	return mbrec_on_ip_rcv(ctx, skb, 0);
}
MBREC_KFUNC(MBREC_FN_IP6_LIST_RCV, struct list_head *head)
{
	return mbrec_on_ip_list_rcv(ctx, head);
}
#elif MBREC_ATTACH_IP6_RCV == 2
int mbrec_kp_ip6_rcv(struct pt_regs *ctx, struct sk_buff *skb)
{
	return mbrec_on_ip_rcv(ctx, skb, 0);
}
int mbrec_kp_ip6_list_rcv(struct pt_regs *ctx, struct list_head *head)
{
	return mbrec_on_ip_list_rcv(ctx, head);
}
#endif
#endif

/* IPv6: the TCP receive layer (the same handler: the IP header is at network_header). */
#if MBREC_ATTACH_TCP_V6_RCV == 1
MBREC_KFUNC(MBREC_FN_TCP_V6_RCV, struct sk_buff *skb)
{
	return mbrec_on_tcp_v4_rcv(ctx, skb);
}
#elif MBREC_ATTACH_TCP_V6_RCV == 2
int mbrec_kp_tcp_v6_rcv(struct pt_regs *ctx, struct sk_buff *skb)
{
	return mbrec_on_tcp_v4_rcv(ctx, skb);
}
#endif

#if MBREC_ATTACH_SKB_COPY_DATAGRAM_ITER == 1
MBREC_KFUNC(MBREC_FN_SKB_COPY_DATAGRAM_ITER, struct sk_buff *skb, int offset, void *to, int size)
{
	return mbrec_on_skb_copy_datagram_iter(ctx, skb, offset, size);
}
#elif MBREC_ATTACH_SKB_COPY_DATAGRAM_ITER == 2
int mbrec_kp_skb_copy_datagram_iter(struct pt_regs *ctx, struct sk_buff *skb, int offset,
				    void *to, int size)
{
	return mbrec_on_skb_copy_datagram_iter(ctx, skb, offset, size);
}
#endif

/* ---- raw tracepoints (3): the kernel's stable interface, where kprobes and fentry are refused ----
 * Each tracepoint stands for the layer whose probe id it records (docs/recorder.md): no
 * tracepoint sits at tcp_transmit_skb, ip_queue_xmit or tcp_v4_rcv, so those layers are absent.
 * Arguments are the tracepoint's TP_PROTO, in ctx->args[]. */
#ifdef MBREC_SKB_SPAN_LEN
/* Every sk_buff field a packet program reads lies in one span (MBREC_SKB_SPAN_OFF/LEN, from
 * the BTF offsets: mbrec/recorder/program.py): one read of it into a per-CPU buffer instead of
 * one helper call per field, before the netns filter most runs stop at (a tracepoint fires for
 * every namespace's packets). One slot per probe: a program never runs nested in itself on a
 * CPU, but another one may interrupt it (a softirq's), so programs never share a slot. */
struct mbrec_skb_span {
	u8 b[MBREC_SKB_SPAN_LEN];
};
BPF_PERCPU_ARRAY(mbrec_skb_span_buf, struct mbrec_skb_span, MBREC_PROBE_MAX);
#define SKBF(dst, span, f) \
	__builtin_memcpy(&(dst), (span)->b + (MBREC_OFF_SKB_##f - MBREC_SKB_SPAN_OFF), sizeof(dst))

static __always_inline struct mbrec_skb_span *mbrec_skb_span(struct sk_buff *skb, u32 probe)
{
	struct mbrec_skb_span *span = mbrec_skb_span_buf.lookup(&probe);
	if (!span || bpf_probe_read_kernel(span->b, MBREC_SKB_SPAN_LEN,
					   (const char *)skb + MBREC_SKB_SPAN_OFF))
		return NULL;
	return span;
}

/* The packet tracepoint programs (mbrec_tp_packet, the copy) read the skb through a view: a
 * copy of its span, or, loaded as BTF-typed tracepoints (MBREC_TP_BTF), the skb itself, field
 * by field with plain loads (TPF): no span. SKBV_AT: at a byte offset into the field. */
#if MBREC_TP_BTF
#define mbrec_skb_view sk_buff
#define SKBV_AT(dst, view, f, k) TPF(dst, view, MBREC_OFF_SKB_##f + (k))
static __always_inline struct sk_buff *mbrec_skb_view_of(struct sk_buff *skb, u32 probe)
{
	return skb;
}
#else
#define mbrec_skb_view mbrec_skb_span
#define SKBV_AT(dst, view, f, k) \
	__builtin_memcpy(&(dst), (view)->b + (MBREC_OFF_SKB_##f - MBREC_SKB_SPAN_OFF) + (k), \
			 sizeof(dst))
#define mbrec_skb_view_of mbrec_skb_span
#endif
#define SKBV(dst, view, f) SKBV_AT(dst, view, f, 0)

#endif

#ifdef MBREC_SK_SPAN_LEN
/* The same for the socket's fields (struct sock_common and the few after it), for the
 * tracepoint programs and the flow programs (bpf/flows.bpf.c) alike. */
struct mbrec_sk_span {
	u8 b[MBREC_SK_SPAN_LEN];
};
BPF_PERCPU_ARRAY(mbrec_sk_span_buf, struct mbrec_sk_span, MBREC_PROBE_MAX);
#define SKF_AT(f) (MBREC_OFF_SK_##f - MBREC_SK_SPAN_OFF)

static __always_inline struct mbrec_sk_span *mbrec_sk_span(struct sock *sk, u32 probe)
{
	struct mbrec_sk_span *span = mbrec_sk_span_buf.lookup(&probe);
	if (!span || bpf_probe_read_kernel(span->b, MBREC_SK_SPAN_LEN,
					   (const char *)sk + MBREC_SK_SPAN_OFF))
		return NULL;
	return span;
}

/* The programs that read a socket's identity (the copy program, a flow's first sight) read it
 * through a view, as the packet programs read the skb: a copy of its span, or, BTF-typed
 * (MBREC_TP_BTF), the socket itself with plain loads. SKV_AT: at a byte offset into the field. */
#if MBREC_TP_BTF
#define mbrec_sk_view sock
#define SKV_AT(dst, view, f, k) TPF(dst, view, MBREC_OFF_SK_##f + (k))
static __always_inline struct sock *mbrec_sk_view_of(struct sock *sk, u32 probe)
{
	return sk;
}
#else
#define mbrec_sk_view mbrec_sk_span
#define SKV_AT(dst, view, f, k) \
	__builtin_memcpy(&(dst), (view)->b + SKF_AT(f) + (k), sizeof(dst))
#define mbrec_sk_view_of mbrec_sk_span
#endif
#define SKV(dst, view, f) SKV_AT(dst, view, f, 0)

/* An address of the view as its four 32-bit words (as its BTF type holds them). */
#define SKV_ADDR(w, view, f) do {			\
		SKV_AT((w)[0], view, f, 0);		\
		SKV_AT((w)[1], view, f, 4);		\
		SKV_AT((w)[2], view, f, 8);		\
		SKV_AT((w)[3], view, f, 12);		\
	} while (0)

/* mbrec_sock_tuple from a view of the socket, and e->netns; 0 if not an INET socket. */
static __always_inline int mbrec_sock_tuple_view(struct mbrec_pkt_event *e,
						 struct mbrec_sk_view *view, int out)
{
	u16 family = 0, dport = 0, num = 0;
	SKV(family, view, FAMILY);
	SKV(dport, view, DPORT);
	SKV(num, view, NUM);
	u8 *local = out ? e->saddr : e->daddr;
	u8 *remote = out ? e->daddr : e->saddr;
	u32 l[4] = {}, r[4] = {};
	if (family == MBREC_AF_INET6) {
		SKV_ADDR(r, view, V6_DADDR);
		if (r[0] == 0 && r[1] == 0 && r[2] == 0xffff0000U) /* ::ffff:a.b.c.d */
			family = MBREC_AF_INET;
	}
	if (family == MBREC_AF_INET) {
		e->family = MBREC_AF_INET;
		SKV(l[0], view, RCV_SADDR);
		SKV(r[0], view, DADDR);
		__builtin_memcpy(local, l, 4);
		__builtin_memcpy(remote, r, 4);
	} else if (family == MBREC_AF_INET6) {
		e->family = MBREC_AF_INET6;
		SKV_ADDR(l, view, V6_RCV_SADDR);
		__builtin_memcpy(local, l, 16);
		__builtin_memcpy(remote, r, 16);
	} else {
		return 0;
	}
	e->sport = out ? num : MBREC_NTOHS(dport);
	e->dport = out ? MBREC_NTOHS(dport) : num;
	struct net *net = NULL;
	SKV(net, view, NET);
	e->netns = mbrec_tp_netns_of_net(net);
	return 1;
}

/* A full TCP socket (not a request or timewait one, whose fields end with sock_common). */
static __always_inline int mbrec_sk_view_tcp(struct mbrec_sk_view *view)
{
	u8 state = 0;
	u16 proto = 0, type = 0;
	SKV(state, view, STATE);
	if (state == MBREC_TCP_TIME_WAIT || state == MBREC_TCP_NEW_SYN_RECV)
		return 0;
	SKV(proto, view, PROTOCOL);
	SKV(type, view, TYPE);
	return proto == MBREC_IPPROTO_TCP && type == MBREC_SOCK_STREAM;
}

#endif

#ifdef MBREC_SKB_SPAN_LEN
/* One packet at a device or receive tracepoint. dev: the tracepoint's device argument, or
 * NULL for skb->dev; at_data: the IP header is at skb->data (receive, before the IP layer has
 * set the network header), else at head + network_header. slot: where net_dev_start_xmit
 * leaves its event for net_dev_xmit, or NULL. */
static __always_inline int mbrec_tp_packet(void *ctx, u8 probe, struct sk_buff *skb,
					   struct net_device *dev, int at_data,
					   struct mbrec_pkt_event *slot)
{
	/* The netns filter, which most runs stop at, with the fewest helper calls (they cost about
	 * the same whatever they copy): given the device, before the span; else after it, which
	 * holds skb->dev. (Inlined: dev is a constant NULL or an argument in each program.) */
	u32 netns = 0;
	if (dev) {
		netns = mbrec_tp_netns_of_dev(dev);
		if (!(MBREC_NETNS_OK(netns)))
			return 0;
	}
	struct mbrec_skb_view *span = mbrec_skb_view_of(skb, probe);
	if (!span)
		return 0;
	if (!dev) {
		SKBV(dev, span, DEV);
		netns = mbrec_tp_netns_of_dev(dev);
		if (!(MBREC_NETNS_OK(netns)))
			return 0;
	}
	u16 proto = 0;
	SKBV(proto, span, PROTOCOL);
	u16 eth_proto = MBREC_NTOHS(proto);
	if (eth_proto != MBREC_ETH_P_IP && eth_proto != MBREC_ETH_P_IPV6)
		return 0;
	struct mbrec_pkt_event e = {};
	e.netns = netns;
	unsigned char *head = NULL, *ip = NULL;
	SKBV(head, span, HEAD);
	if (at_data) {
		SKBV(ip, span, DATA);
	} else {
		u16 nh = 0;
		SKBV(nh, span, NETWORK_HEADER);
		ip = head + nh;
	}
	if (!mbrec_parse_ip(&e, ip, eth_proto))
		return 0;
	mbrec_init(&e, probe, skb);
	if (dev)
		TPF(e.ifindex, dev, MBREC_OFF_DEV_IFINDEX);
	u32 end = 0; /* an offset from head on 64-bit kernels (NET_SKBUFF_DATA_USES_OFFSET) */
	u16 segs = 0;
	SKBV(end, span, END);
	RDO(segs, head + end, MBREC_OFF_SHINFO_GSO_SEGS);
	e.gso_segs = segs ? segs : 1;
	struct sock *sk = NULL;
	SKBV(sk, span, SK);
	e.sock_cookie = mbrec_tp_sock_id(sk);
	if (slot)
		*slot = e;
	return mbrec_submit(ctx, &e, sk);
}
#endif

#if MBREC_ATTACH_DEV_QUEUE_XMIT == 3
/* net:net_dev_queue(skb): in __dev_queue_xmit, before the qdisc */
int mbrec_tp_dev_queue_xmit(struct bpf_raw_tracepoint_args *ctx)
{
	return mbrec_tp_packet(ctx, MBREC_PROBE_DEV_QUEUE_XMIT, (struct sk_buff *)ctx->args[0],
			       NULL, 0, NULL);
}
#endif

#if MBREC_ATTACH_QDISC_DEQUEUE == 3
/* qdisc:qdisc_dequeue(qdisc, txq, packets, skb): skb is NULL when nothing was dequeued, else
 * the head of what goes to the driver (a bulk dequeue chains more: only the head is recorded). */
int mbrec_tp_qdisc_dequeue(struct bpf_raw_tracepoint_args *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx->args[3];
	if (!skb)
		return 0;
	return mbrec_tp_packet(ctx, MBREC_PROBE_QDISC_DEQUEUE, skb, NULL, 0, NULL);
}
#endif

#if MBREC_ATTACH_NET_DEV_XMIT == 3
/* The skb may be freed (or already received by a veth peer) when the driver returns, so
 * net_dev_xmit re-emits the event net_dev_start_xmit built for the same skb on this CPU (the
 * driver runs with bottom halves off: nothing else transmits on the CPU in between, except a
 * nested device such as a tunnel, whose outer skb then goes without its net_dev_xmit event). */
BPF_PERCPU_ARRAY(mbrec_xmit_slot, struct mbrec_pkt_event, 1);
#endif

#if MBREC_ATTACH_DEV_HARD_START_XMIT == 3
/* net:net_dev_start_xmit(skb, dev): per skb handed to the driver (each software-GSO segment) */
int mbrec_tp_dev_hard_start_xmit(struct bpf_raw_tracepoint_args *ctx)
{
	struct mbrec_pkt_event *slot = NULL;
#if MBREC_ATTACH_NET_DEV_XMIT == 3
	u32 zero = 0;
	slot = mbrec_xmit_slot.lookup(&zero);
	if (slot)
		slot->skb = 0;
#endif
	return mbrec_tp_packet(ctx, MBREC_PROBE_DEV_HARD_START_XMIT, (struct sk_buff *)ctx->args[0],
			       (struct net_device *)ctx->args[1], 0, slot);
}
#endif

#if MBREC_ATTACH_NET_DEV_XMIT == 3
/* net:net_dev_xmit(skb, rc, dev, skb_len): the driver returned; rc 0 = NETDEV_TX_OK (a busy
 * driver's skb is handed over again later, and recorded then). */
int mbrec_tp_net_dev_xmit(struct bpf_raw_tracepoint_args *ctx)
{
	u32 zero = 0;
	struct mbrec_pkt_event *slot = mbrec_xmit_slot.lookup(&zero);
	if (!slot || slot->skb != ctx->args[0])
		return 0;
	struct mbrec_pkt_event e = *slot;
	slot->skb = 0;
	if ((int)ctx->args[1] != 0)
		return 0;
	e.ts_ns = bpf_ktime_get_ns();
	e.probe = MBREC_PROBE_NET_DEV_XMIT;
	return mbrec_submit(ctx, &e, NULL);
}
#endif

#if MBREC_ATTACH_ETH_TYPE_TRANS == 3
/* The driver's hand-over to the stack, once per wire frame, whichever API the driver uses:
 * net:netif_rx (veth, loopback), napi_gro_receive_entry, netif_receive_skb_entry,
 * netif_receive_skb_list_entry (each skb of the list). One program attached to each. */
int mbrec_tp_eth_type_trans(struct bpf_raw_tracepoint_args *ctx)
{
	return mbrec_tp_packet(ctx, MBREC_PROBE_ETH_TYPE_TRANS, (struct sk_buff *)ctx->args[0],
			       NULL, 1, NULL);
}
#endif

#if MBREC_ATTACH_IP_RCV == 3
/* net:netif_receive_skb(skb): __netif_receive_skb_core, after GRO, just before the protocol
 * handler (ip_rcv) runs: the IP receive layer's entry. */
int mbrec_tp_ip_rcv(struct bpf_raw_tracepoint_args *ctx)
{
	return mbrec_tp_packet(ctx, MBREC_PROBE_IP_RCV, (struct sk_buff *)ctx->args[0], NULL, 1,
			       NULL);
}
#endif

#if MBREC_ATTACH_SKB_COPY_DATAGRAM_ITER == 3
/* skb:skb_copy_datagram_iovec(skb, len): the copy to the application, TCP sockets only (as
 * mbrec_on_skb_copy_datagram_iter). The tracepoint has no offset argument; a TCP read copies
 * from tp->copied_seq, which the kernel advances only after the copy, so offset = copied_seq -
 * cb->seq (a MSG_PEEK read copies from its own position: its offset is not seen). Raw: from
 * copies of the skb and the socket; BTF-typed (MBREC_TP_BTF): plain loads from both but for
 * copied_seq. */
int mbrec_tp_skb_copy_datagram_iter(struct bpf_raw_tracepoint_args *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx->args[0];
	int size = (int)ctx->args[1];
	struct mbrec_skb_view *ss = mbrec_skb_view_of(skb, MBREC_PROBE_SKB_COPY_DATAGRAM_ITER);
	if (!ss)
		return 0;
	struct sock *sk = NULL;
	SKBV(sk, ss, SK);
	if (!sk)
		return 0;
	struct mbrec_sk_view *ks = mbrec_sk_view_of(sk, MBREC_PROBE_SKB_COPY_DATAGRAM_ITER);
	struct mbrec_pkt_event e = {};
	if (!ks || !mbrec_sk_view_tcp(ks) || !mbrec_sock_tuple_view(&e, ks, 0))
		return 0;
	if (!(MBREC_NETNS_OK(e.netns)))
		return 0;
	u32 seq = 0, copied = 0;
	SKBV_AT(seq, ss, CB, MBREC_OFF_TCB_SEQ);
	mbrec_init(&e, MBREC_PROBE_SKB_COPY_DATAGRAM_ITER, skb);
	/* past struct sock, with the helper: skb->sk is an RCU pointer, which
	 * bpf_skc_to_tcp_sock() does not take */
	RDO(copied, sk, MBREC_OFF_TP_COPIED_SEQ);
	int offset = (int)(copied - seq);
	/* ack, flags from the TCP header the skb arrived with (still in its head) */
	unsigned char *head = NULL;
	u16 th_off = 0;
	SKBV(head, ss, HEAD);
	SKBV(th_off, ss, TRANSPORT_HEADER);
	struct mbrec_tcph th;
	if (th_off != 0xffff && !bpf_probe_read_kernel(&th, sizeof(th), head + th_off)) {
		e.ack = MBREC_NTOHL(th.ack_seq);
		e.tcp_flags = th.flags;
	}
	e.seq = seq + (offset > 0 ? offset : 0);
	e.len = size > 0 ? size : 0;
	e.end_seq = e.seq + e.len;
	SKBV(e.ifindex, ss, IIF);
	u32 end = 0;
	u16 segs = 0;
	SKBV(end, ss, END);
	RDO(segs, head + end, MBREC_OFF_SHINFO_GSO_SEGS);
	e.gso_segs = segs ? segs : 1;
	e.sock_cookie = mbrec_tp_sock_id(sk);
	/* sampled on the skb's first byte, as the layers below saw it */
	return mbrec_submit_key(ctx, &e, sk, seq);
}
#endif

/* ---- flow and socket probes: built with -DMBREC_FLOWS ----
 * bpf/flows.bpf.c (and its hooks) may use everything above: RDO(), mbrec_count_lost(), the
 * netns and socket helpers and the socket span, the filter macros, mbrec_sock_id(). */
#ifdef MBREC_FLOWS
#include "flows.bpf.c"
#endif
