/* SPDX-License-Identifier: GPL-2.0 */
/*
 * mbrec event layouts: the one definition.
 *
 * The BPF programs write these structs into the ring buffer; mbrec/events.py parses this
 * file to build the numpy dtypes that decode them, and the trace header carries the same
 * layout, so a reader never needs this file.  tests/test_events.py compiles it with the
 * host C compiler and checks that every offset and size agrees with the parsed layout.
 *
 * Rules that keep the parser simple: one field per line, only the fixed-width types
 * __u8/__u16/__u32/__u64 (and arrays of them), natural alignment, explicit padding,
 * little-endian. Integer constants are plain #defines.
 */
#ifndef MBREC_EVENTS_H
#define MBREC_EVENTS_H

#ifndef __BPF__
#ifndef MBREC_HAVE_KERNEL_TYPES
#include <linux/types.h>
#endif
#endif

/* Schema ids: the "s" of every event batch in a trace file. */
#define MBREC_SCHEMA_PKT 1
#define MBREC_SCHEMA_SOCK 2
#define MBREC_SCHEMA_FLOW 3
#define MBREC_SCHEMA_TCP 4

/* Packet probes, in path order. Send: TCP, IP, MAC/qdisc, driver. Receive: MAC, IP, TCP, copy. */
#define MBREC_PROBE_TCP_TRANSMIT_SKB 1
#define MBREC_PROBE_IP_QUEUE_XMIT 2
#define MBREC_PROBE_DEV_QUEUE_XMIT 3
#define MBREC_PROBE_DEV_HARD_START_XMIT 4
#define MBREC_PROBE_ETH_TYPE_TRANS 5
#define MBREC_PROBE_IP_RCV 6
#define MBREC_PROBE_TCP_V4_RCV 7
#define MBREC_PROBE_SKB_COPY_DATAGRAM_ITER 8
/* Socket and flow probes. */
#define MBREC_PROBE_TCP_SENDMSG 9
#define MBREC_PROBE_TCP_RECVMSG 10
#define MBREC_PROBE_TCP_ACK 11
#define MBREC_PROBE_TCP_RTT 12
#define MBREC_PROBE_TCP_RETRANSMIT 13
#define MBREC_PROBE_TCP_ENTER_RECOVERY 14
#define MBREC_PROBE_TCP_TIMEOUT 15
#define MBREC_PROBE_TCP_STATE 16
#define MBREC_PROBE_FLOW_PERIODIC 17
/* Tracepoint-only layers (--attach tracepoint): the qdisc handing an skb to the device, and
 * the driver's return from transmitting it. */
#define MBREC_PROBE_QDISC_DEQUEUE 18
#define MBREC_PROBE_NET_DEV_XMIT 19
#define MBREC_PROBE_MAX 32

/* Address families as the kernel numbers them. */
#define MBREC_AF_INET 2
#define MBREC_AF_INET6 10

/* TCP flag bits, as in the TCP header's 14th byte. */
#define MBREC_TCP_FIN 0x01
#define MBREC_TCP_SYN 0x02
#define MBREC_TCP_RST 0x04
#define MBREC_TCP_PSH 0x08
#define MBREC_TCP_ACK 0x10

/*
 * One packet seen at one packet probe. Addresses are 16 bytes so IPv6 fits; IPv4 uses the
 * first 4 bytes (network order). Ports are host order. seq/end_seq cover the whole skb, so a
 * TSO/GSO super-segment or a GRO-merged skb is described by its byte range; end_seq - seq is
 * the payload length in sequence space (SYN and FIN count one). At tcp_transmit_skb the TCP
 * header does not exist yet: seq comes from the skb's control block and ack from rcv_nxt.
 * At skb_copy_datagram_iter seq/end_seq/len are the bytes that one call copied to the
 * application (a read may take part of an skb, or an skb coalesced from several segments).
 */
struct mbrec_pkt_event {
	__u64 ts_ns;       /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 skb;         /* skb address, for reference only: it is reused and cloned */
	__u64 sock_cookie; /* 0 where the skb has no socket (most receive probes) */
	__u32 netns;       /* network namespace inode */
	__u32 ifindex;     /* 0 above the device layer */
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 seq;
	__u32 end_seq;
	__u32 ack;
	__u32 len;         /* TCP payload bytes in this skb */
	__u16 sport;
	__u16 dport;
	__u16 ip_id;
	__u16 gso_segs;    /* wire segments this skb stands for (1 when not GSO/GRO) */
	__u16 cpu;
	__u8 probe;        /* MBREC_PROBE_* */
	__u8 tcp_flags;
	__u8 family;       /* MBREC_AF_* */
	__u8 pad[3];
};

/*
 * One application read or write on a TCP socket, with the byte range it covers in sequence
 * space: a write appends [seq_start, seq_end) to the send queue (write_seq before/after), a
 * read consumes [seq_start, seq_end) from the receive queue (copied_seq before/after).
 */
#define MBREC_SOCK_WRITE 1
#define MBREC_SOCK_READ 2
struct mbrec_sock_event {
	__u64 ts_ns;
	__u64 sock_cookie;
	__u32 netns;
	__u32 tgid;
	__u32 seq_start;
	__u32 seq_end;
	__u32 bytes;       /* bytes accepted (write) or copied (read), not the requested size */
	__u32 requested;   /* the size the application asked for */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 kind;         /* MBREC_SOCK_* */
	__u8 family;
	__u8 pad[2];
};

/*
 * A snapshot of one TCP flow: kernel state plus mbrec's own per-socket counters, which are
 * kept in the kernel so nothing is lost between samples. Taken per ACK (thinned by
 * --flow-sample), periodically for every live flow, and once at close or at stop.
 */
#define MBREC_FLOW_ACK 1
#define MBREC_FLOW_PERIODIC 2
#define MBREC_FLOW_CLOSE 3
#define MBREC_FLOW_STOP 4
#define MBREC_FLOW_STATE 5
#define MBREC_FLOWF_SEEN_ESTABLISH 0x01 /* established_ns is exact, else a lower bound */
struct mbrec_flow_event {
	__u64 ts_ns;
	__u64 sock_cookie;
	__u64 established_ns;   /* when the flow became established, or first seen */
	__u64 bytes_sent;
	__u64 bytes_acked;
	__u64 bytes_received;
	__u64 bytes_retrans;
	__u64 rtt_sum_us;       /* sum of raw RTT samples (SumRTT) */
	__u64 read_bytes;       /* bytes the application read (ReadByte) */
	__u64 write_bytes;      /* bytes the application wrote and TCP accepted (WriteByte) */
	__u64 delivery_rate;    /* bytes per second, where the kernel has it */
	__u32 netns;
	__u32 rtt_samples;      /* number of RTT samples (SampleRTT) */
	__u32 snd_cwnd;
	__u32 snd_ssthresh;
	__u32 snd_wnd;
	__u32 rcv_wnd;
	__u32 mss_cache;
	__u32 advmss;
	__u32 packets_out;
	__u32 sacked_out;
	__u32 lost_out;
	__u32 retrans_out;
	__u32 packets_in_flight;
	__u32 bytes_in_flight;
	__u32 total_retrans;
	__u32 fast_recoveries;
	__u32 timeouts;         /* first RTO expirations (backoff 0) */
	__u32 timeouts_backoff; /* repeated RTO expirations while backed off */
	__u32 app_wqueue;       /* write_seq - snd_nxt (CurAppWQueue) */
	__u32 max_app_wqueue;   /* MaxAppWQueue */
	__u32 srtt_us;
	__u32 rttvar_us;
	__u32 min_rtt_us;
	__u32 snd_una;
	__u32 snd_nxt;
	__u32 write_seq;
	__u32 rcv_nxt;
	__u32 copied_seq;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 state;
	__u8 reason;            /* MBREC_FLOW_* */
	__u8 family;
	__u8 flags;             /* MBREC_FLOWF_* */
};

/*
 * A discrete TCP event on one socket: an RTT sample, a retransmitted segment, an entry into
 * fast recovery, a retransmission timeout, or a state change. value carries the sample (us),
 * or the new state; seq/end_seq the retransmitted range.
 */
#define MBREC_TCP_RTT_SAMPLE 1
#define MBREC_TCP_RETRANSMIT 2
#define MBREC_TCP_RECOVERY 3
#define MBREC_TCP_TIMEOUT 4
#define MBREC_TCP_STATE 5
/* TCP states as the kernel numbers them (include/net/tcp_states.h): the value of a
 * MBREC_TCP_STATE event, the state field of flow records, what the probes compare skc_state with */
#define MBREC_TCP_ESTABLISHED 1
#define MBREC_TCP_SYN_SENT 2
#define MBREC_TCP_SYN_RECV 3
#define MBREC_TCP_FIN_WAIT1 4
#define MBREC_TCP_FIN_WAIT2 5
#define MBREC_TCP_TIME_WAIT 6
#define MBREC_TCP_CLOSE 7
#define MBREC_TCP_CLOSE_WAIT 8
#define MBREC_TCP_LAST_ACK 9
#define MBREC_TCP_LISTEN 10
#define MBREC_TCP_CLOSING 11
#define MBREC_TCP_NEW_SYN_RECV 12
struct mbrec_tcp_event {
	__u64 ts_ns;
	__u64 sock_cookie;
	__u32 netns;
	__u32 value;
	__u32 seq;
	__u32 end_seq;
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u8 kind;              /* MBREC_TCP_* */
	__u8 old_state;
	__u8 new_state;
	__u8 family;
};

#endif /* MBREC_EVENTS_H */
