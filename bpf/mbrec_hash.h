/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The sampling hash: one definition, compiled into the BPF program and, in tests, by the host C
 * compiler to check mbrec/recorder/sampling.py (the numpy reference the analyzer may use).
 *
 * --sample N keeps a packet when the top N bits of mbrec_sample_hash() are zero. The hash sees
 * only what is the same on both hosts and at every layer:
 *   - the unordered endpoint pair: endpoint(saddr, sport) + endpoint(daddr, dport), so a
 *     packet and its reverse direction share the flow part;
 *   - the packet's sequence key: seq when the packet occupies sequence space (payload, SYN or
 *     FIN), else ack (a pure ACK: its seq repeats, its ack moves).
 * Addresses are the 16 event bytes (IPv4 in the first 4, the rest zero), read as four
 * little-endian 32-bit words; ports are host order. Not hashed: netns, ifindex, ip id, skb,
 * lengths that change between layers.
 */
#ifndef MBREC_HASH_H
#define MBREC_HASH_H

/* murmur3's 32-bit finaliser: cheap and well mixed. */
static inline __attribute__((always_inline)) __u32 mbrec_mix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bU;
	h ^= h >> 13;
	h *= 0xc2b2ae35U;
	h ^= h >> 16;
	return h;
}

static inline __attribute__((always_inline)) __u32
mbrec_endpoint_hash(__u32 w0, __u32 w1, __u32 w2, __u32 w3, __u32 port)
{
	return mbrec_mix32(w0 ^ mbrec_mix32(w1 ^ mbrec_mix32(w2 ^ mbrec_mix32(w3 ^ port))));
}

/* The flow part: the same for both directions of a connection. */
static inline __attribute__((always_inline)) __u32
mbrec_flow_hash(const __u32 *saddr, __u32 sport, const __u32 *daddr, __u32 dport)
{
	return mbrec_endpoint_hash(saddr[0], saddr[1], saddr[2], saddr[3], sport) +
	       mbrec_endpoint_hash(daddr[0], daddr[1], daddr[2], daddr[3], dport);
}

static inline __attribute__((always_inline)) __u32 mbrec_sample_hash(__u32 flow, __u32 seqkey)
{
	return mbrec_mix32(flow ^ mbrec_mix32(seqkey));
}

#endif /* MBREC_HASH_H */
