/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The flow programs' hooks on the kernel's stable tracepoints (--attach tracepoint: raw
 * tracepoints, MBREC_ATTACH_<TRACEPOINT> == 3), feeding the handlers of flows.bpf.c, into
 * which mbrec/recorder/flows.py pastes this file. docs/metrics.md says which metrics are exact
 * here and which are not.
 *
 * Where each record comes from (state changes and retransmits: flows.bpf.c):
 *   per-ACK snapshot  tcp:tcp_probe(sk, skb), at the start of tcp_rcv_established: the values
 *                     before this segment (and its ACK) is processed, one ACK behind fexit
 *                     tcp_ack; every MBREC_FLOW_SAMPLE-th segment of a flow
 *   fast recovery,    tcp:tcp_cong_state_set(sk, ca_state), before the state is stored: a
 *   timeouts          change into CA_Recovery is a fast recovery; every CA_Loss entry is a
 *                     retransmission timeout (tcp_enter_loss runs on each RTO), first or
 *                     backed off by icsk_backoff
 *   writes, reads     sock:sock_send_length / sock_recv_length(sk, ret, flags), after the
 *                     socket call returned: [write_seq - ret, write_seq), [copied_seq - ret,
 *                     copied_seq); the requested size is not known (0)
 * Not here: raw RTT samples (no tracepoint sees them: rtt_samples and rtt_sum_us stay 0; the
 * smoothed RTT is in every snapshot), SYN-ACK timeouts of request sockets.
 */

#define MBREC_TCP_CA_RECOVERY 3 /* enum tcp_ca_state, include/uapi/linux/tcp.h */
#define MBREC_TCP_CA_LOSS 4

#if MBREC_ATTACH_TCP_PROBE == 3
/* tcp:tcp_probe(sk, skb): a segment arrived on an established socket */
int mbrec_flow_tp_tcp_ack(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	return mbrec_flow_on_ack(sk, mbrec_tp_sock_id(sk));
}
#endif

#if MBREC_ATTACH_TCP_CONG_STATE_SET == 3
/* tcp:tcp_cong_state_set(sk, ca_state) */
int mbrec_flow_tp_tcp_cong_state_set(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	u8 ca_state = (u8)ctx->args[1];
	struct mbrec_flow_id id;
	struct mbrec_flow_state *st = mbrec_flow_get(sk, mbrec_tp_sock_id(sk), &id,
						     MBREC_PROBE_TCP_ENTER_RECOVERY);
	if (!st)
		return 0;
	u8 before = st->ca_state;
	st->ca_state = ca_state;
	if (ca_state == MBREC_TCP_CA_RECOVERY && before != MBREC_TCP_CA_RECOVERY)
		mbrec_flow_recovery(sk, &id, st);
	else if (ca_state == MBREC_TCP_CA_LOSS)
		mbrec_flow_timeout(sk, &id, st);
	return 0;
}
#endif

#if MBREC_ATTACH_SOCK_SEND_LENGTH == 3
/* sock:sock_send_length(sk, ret, flags): after sendmsg returned */
int mbrec_flow_tp_tcp_sendmsg(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	return sk ? mbrec_flow_on_io(sk, mbrec_tp_sock_id(sk), MBREC_SOCK_WRITE, 0, 0,
				   (int)ctx->args[1], NULL) : 0;
}
#endif

#if MBREC_ATTACH_SOCK_RECV_LENGTH == 3
/* sock:sock_recv_length(sk, ret, flags): after recvmsg returned */
int mbrec_flow_tp_tcp_recvmsg(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (struct sock *)ctx->args[0];
	return sk ? mbrec_flow_on_io(sk, mbrec_tp_sock_id(sk), MBREC_SOCK_READ, 0, (int)ctx->args[2],
				   (int)ctx->args[1], NULL) : 0;
}
#endif
