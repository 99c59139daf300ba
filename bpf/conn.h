/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Connection identity: when a local process connects to a watched server port, the socket
 * enters SYN_SENT in that process's context, so one event per connection names the client
 * process, user and cgroup — no per-read hook needed. Closes of watched flows are reported
 * too, so userspace can expire its flow state. Both cost one event per connection. */
#ifndef __VIGIL_CONN_H__
#define __VIGIL_CONN_H__

#include "tcx.h"

/* The connecting process, noted at SYN_SENT (which runs in its context, but before the
 * kernel has picked the source port) and reported at ESTABLISHED (which runs in softirq,
 * with both ports known). Keyed by socket address; LRU so connects that never finish age
 * out. */
struct connector {
	__u32 pid;
	__u32 tgid;
	__u32 uid;
	__u32 _pad;
	__u64 cgroup_id;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct connector);
} connectors SEC(".maps");

/* The local port from inet_sport: skc_num is already zeroed when the state change to
 * TCP_CLOSE is traced (the port is released first). */
static __always_inline __u16 local_port(struct sock *sk)
{
	return bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(track_sock_state, struct sock *sk, int oldstate, int newstate)
{
	if (newstate != TCP_SYN_SENT && newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE)
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	__u16 rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	bool client_side = port_watched(rport);
	__u64 key = (__u64)sk;

	if (newstate == TCP_SYN_SENT) {
		if (!client_side)
			return 0;
		struct connector c = {};
		__u64 id = bpf_get_current_pid_tgid();
		c.pid = (__u32)id;
		c.tgid = id >> 32;
		c.uid = (__u32)bpf_get_current_uid_gid();
		c.cgroup_id = bpf_get_current_cgroup_id();
		bpf_get_current_comm(c.comm, sizeof(c.comm));
		bpf_map_update_elem(&connectors, &key, &c, BPF_ANY);
		return 0;
	}

	struct connector who = {};
	if (newstate == TCP_ESTABLISHED) {
		/* Only a connect we saw start; server-side sockets also become ESTABLISHED. */
		if (oldstate != TCP_SYN_SENT || !client_side)
			return 0;
		struct connector *c = bpf_map_lookup_elem(&connectors, &key);
		if (!c)
			return 0;
		who = *c;
		bpf_map_delete_elem(&connectors, &key);
	} else {
		__u16 lport = local_port(sk);
		/* A server-side socket of a watched flow is reported oriented client → server;
		 * a listening socket has no peer port and is not a flow. */
		if (!client_side && (rport == 0 || !port_watched(lport)))
			return 0;
		if (oldstate == TCP_SYN_SENT)
			bpf_map_delete_elem(&connectors, &key);
	}

	struct conn_rec *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_lost(HOOK_CONN, 1, 0);
		return 0;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->kind = REC_CONN;
	r->closed = newstate == TCP_CLOSE;
	r->ktime = bpf_ktime_get_ns();
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	__u16 lport = local_port(sk);
	r->family = family;
	__u8 *local = client_side ? r->saddr : r->daddr;
	__u8 *remote = client_side ? r->daddr : r->saddr;
	r->sport = client_side ? lport : rport;
	r->dport = client_side ? rport : lport;
	if (family == AF_INET6) {
		BPF_CORE_READ_INTO(local, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(remote, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__be32 *)local, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__be32 *)remote, sk, __sk_common.skc_daddr);
	}
	/* Process fields only for an open: a close runs on behalf of nobody in particular. */
	r->pid = who.pid;
	r->tgid = who.tgid;
	r->uid = who.uid;
	r->cgroup_id = who.cgroup_id;
	__builtin_memcpy(r->comm, who.comm, sizeof(r->comm));
	/* An open wakes the reader at once, so it reads the client's /proc entry while the
	 * client still runs (one wakeup per connection, not per packet). */
	bpf_ringbuf_submit(r, newstate == TCP_CLOSE ? ring_flags() : BPF_RB_FORCE_WAKEUP);
	return 0;
}

#endif /* __VIGIL_CONN_H__ */
