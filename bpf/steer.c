// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Steering: moves the TCP connections of flagged workloads to governed database servers into
 * Vigil's enforcement proxy, with no change to the client. One object, loaded by pkg/steer and
 * attached to the cgroup v2 root:
 *
 *   cgroup/connect4, connect6   a flagged process's connect() to a governed server is
 *                               rewritten to the proxy listener that fronts it; the original
 *                               destination and the caller's identity go into the socket's
 *                               local storage
 *   cgroup/getpeername4, 6      give the client back the address it asked for
 *   sockops                     when the steered connection is established, carry the
 *                               client socket's storage over to the proxy's accepted socket,
 *                               where the proxy reads it by file descriptor: the identity
 *                               comes from the kernel, never from what the client sends
 *   raw_tp/sched_process_exec,  flag processes by executable from the moment they exec, and
 *   _fork, _exit                their children from the moment they exist (attached only
 *                               while a selector names an executable)
 *   sk_lookup                   a connection arriving from another host, from a flagged
 *                               source network, to a governed server's port is handed to the
 *                               proxy's listening socket (attached to the host's network
 *                               namespace only while a selector names a source)
 *
 * Unflagged connections pay one hash lookup in connect() (is the destination governed?) and
 * one in sockops at connection setup. Addresses are kept in IPv6 form, IPv4 as v4-mapped
 * (::ffff:a.b.c.d), so one set of maps serves both families. */
#include "vigil_sock.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "steer.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The agent's own process: its sockets (the proxy's upstream connections above all) are
 * never steered, so the proxy cannot loop into itself. */
const volatile __u32 self_tgid = 0;

#define MAX_CGROUP_DEPTH 16

/* In flagged_tgids, marks a process flagged for the executable it runs (it stops being
 * flagged when it execs another), as opposed to one flagged itself (by pid), whose flag
 * its children keep whatever they exec. */
#define SEL_BY_EXE 0x80000000u

/* Governed server → the proxy listener in front of it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct steer_addr);
	__type(value, struct steer_addr);
} routes SEC(".maps");

/* Flagged cgroups (by cgroup id, the inode of its directory in cgroupfs): a process in one,
 * or below it, is steered. The value says which selector flagged it. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} flagged_cgroups SEC(".maps");

/* Flagged uids. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} flagged_uids SEC(".maps");

/* Flagged processes (tgid): by pid, or by the executable they run (SEL_BY_EXE). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} flagged_tgids SEC(".maps");

/* Flagged executables, by the path given to execve (NUL-padded). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct steer_path);
	__type(value, __u32);
} flagged_exes SEC(".maps");

/* Per socket: what a steered socket was steered from, and who opened it. On the client's
 * socket it answers getpeername; on the proxy's accepted socket, the proxy. Freed with the
 * socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct steer_info);
} steered SEC(".maps");

/* Established steered connections waiting for the proxy's side to be accepted, keyed by
 * the client's address and port as the proxy sees them. Entries live for the length of a
 * handshake; LRU bounds what a flood of connections the proxy never accepts can hold. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct steer_addr);
	__type(value, struct steer_info);
} pending SEC(".maps");

/* Flagged source networks of remote clients. The value says which selector flagged it. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct steer_prefix);
	__type(value, __u32);
} flagged_sources SEC(".maps");

/* The proxies' listening sockets, by the governed server port they front (the address
 * part zero: remote clients reach a server on any of the host's addresses). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 64);
	__type(key, struct steer_addr);
	__type(value, __u64);
} proxy_listeners SEC(".maps");

/* The governed server ports for remote clients: the ports proxy_listeners fronts, kept
 * apart because a closed listening socket leaves the sockhash by itself. A flagged source
 * reaching a governed port whose proxy is gone is refused (only the pinned program of
 * steer_fail: closed outlives its proxy). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u16);
	__type(value, __u8);
} governed_ports SEC(".maps");

/* Remote connections handed to a proxy, by the client's address and port, with the
 * selector that flagged the source: the proxy's Origin of a remote client. LRU: an entry
 * outlives its connection until pushed out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct steer_addr);
	__type(value, __u32);
} remote_steered SEC(".maps");

/* Counters: [0] connects steered, [1] connections handed to the proxy, [2] steered
 * connects whose socket storage could not be created (the connection still goes to the
 * proxy, which then refuses it for want of an identity), [3] remote connections handed to
 * a proxy by sk_lookup, [4] remote connections refused because their proxy is gone. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, __u64);
} steer_stats SEC(".maps");

static __always_inline void count(__u32 i)
{
	__u64 *n = bpf_map_lookup_elem(&steer_stats, &i);
	if (n)
		*n += 1;
}

/* flagged says whether the calling process is flagged, and by which selector. */
static __always_inline __u32 flagged(__u32 tgid, __u32 uid)
{
	__u32 *sel = bpf_map_lookup_elem(&flagged_tgids, &tgid);
	if (sel)
		return *sel & ~SEL_BY_EXE;
	sel = bpf_map_lookup_elem(&flagged_uids, &uid);
	if (sel)
		return *sel;
	for (int level = 1; level < MAX_CGROUP_DEPTH; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			break;
		sel = bpf_map_lookup_elem(&flagged_cgroups, &id);
		if (sel)
			return *sel;
	}
	return 0;
}

/* steer decides for one connect(): dst is the destination in v4-mapped/IPv6 form. It
 * returns the proxy to connect to instead, or NULL, and records what it did. */
static __always_inline struct steer_addr *steer(struct bpf_sock_addr *ctx, struct steer_addr *dst, __u16 family)
{
	if (ctx->type != SOCK_STREAM)
		return NULL;
	struct steer_addr *proxy = bpf_map_lookup_elem(&routes, dst);
	if (!proxy)
		return NULL;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (tgid == self_tgid)
		return NULL;
	__u64 uid_gid = bpf_get_current_uid_gid();
	__u32 sel = flagged(tgid, (__u32)uid_gid);
	if (!sel)
		return NULL;
	count(0);
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return proxy;
	struct steer_info *info = bpf_sk_storage_get(&steered, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!info) {
		count(2);
		return proxy;
	}
	__builtin_memcpy(&info->orig, dst, sizeof(*dst));
	info->family = family;
	info->selector = sel;
	info->pid = (__u32)pid_tgid;
	info->tgid = tgid;
	info->uid = (__u32)uid_gid;
	info->gid = uid_gid >> 32;
	info->cgroup_id = bpf_get_current_cgroup_id();
	info->ktime = bpf_ktime_get_ns();
	bpf_get_current_comm(info->comm, sizeof(info->comm));
	return proxy;
}

static __always_inline void v4mapped(struct steer_addr *a, __u32 ip4, __u32 port_be)
{
	__builtin_memset(a, 0, sizeof(*a));
	a->addr[10] = 0xff;
	a->addr[11] = 0xff;
	__builtin_memcpy(&a->addr[12], &ip4, 4);
	a->port = bpf_ntohs((__u16)port_be);
}

SEC("cgroup/connect4")
int steer_connect4(struct bpf_sock_addr *ctx)
{
	struct steer_addr dst;
	v4mapped(&dst, ctx->user_ip4, ctx->user_port);
	struct steer_addr *proxy = steer(ctx, &dst, AF_INET);
	if (proxy) {
		__u32 ip4;
		__builtin_memcpy(&ip4, &proxy->addr[12], 4);
		ctx->user_ip4 = ip4;
		ctx->user_port = bpf_htons(proxy->port);
	}
	return 1;
}

SEC("cgroup/connect6")
int steer_connect6(struct bpf_sock_addr *ctx)
{
	struct steer_addr dst = {};
	__u32 ip6[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	__builtin_memcpy(dst.addr, ip6, 16);
	dst.port = bpf_ntohs((__u16)ctx->user_port);
	struct steer_addr *proxy = steer(ctx, &dst, AF_INET6);
	if (proxy) {
		/* A v4-mapped destination gets the v4-mapped form of an IPv4 proxy, which a
		 * dual-stack socket reaches. */
		__builtin_memcpy(ip6, proxy->addr, 16);
		ctx->user_ip6[0] = ip6[0];
		ctx->user_ip6[1] = ip6[1];
		ctx->user_ip6[2] = ip6[2];
		ctx->user_ip6[3] = ip6[3];
		ctx->user_port = bpf_htons(proxy->port);
	}
	return 1;
}

/* The client asks whom it is connected to: the server it dialled, not the proxy. The hook
 * also runs when the proxy accepts (accept reports the peer through the same path), where
 * the answer must stay the client's own address. */
SEC("cgroup/getpeername4")
int steer_getpeername4(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct steer_info *info = bpf_sk_storage_get(&steered, sk, 0, 0);
	if (!info || info->accepted)
		return 1;
	__u32 ip4;
	__builtin_memcpy(&ip4, &info->orig.addr[12], 4);
	ctx->user_ip4 = ip4;
	ctx->user_port = bpf_htons(info->orig.port);
	return 1;
}

SEC("cgroup/getpeername6")
int steer_getpeername6(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct steer_info *info = bpf_sk_storage_get(&steered, sk, 0, 0);
	if (!info || info->accepted)
		return 1;
	__u32 ip6[4];
	__builtin_memcpy(ip6, info->orig.addr, 16);
	ctx->user_ip6[0] = ip6[0];
	ctx->user_ip6[1] = ip6[1];
	ctx->user_ip6[2] = ip6[2];
	ctx->user_ip6[3] = ip6[3];
	ctx->user_port = bpf_htons(info->orig.port);
	return 1;
}

/* sockops gives local_port in host byte order and remote_port in network byte order
 * shifted into the upper half of its 32 bits, which bpf_ntohl turns into the port. */
static __always_inline void sockops_addr(struct steer_addr *a, __u32 family, __u32 ip4, __u32 *ip6, __u16 port)
{
	__builtin_memset(a, 0, sizeof(*a));
	if (family == AF_INET) {
		a->addr[10] = 0xff;
		a->addr[11] = 0xff;
		__builtin_memcpy(&a->addr[12], &ip4, 4);
	} else {
		__u32 w[4] = {ip6[0], ip6[1], ip6[2], ip6[3]};
		__builtin_memcpy(a->addr, w, 16);
	}
	a->port = port;
}

SEC("sockops")
int steer_sockops(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return 1;
	__u32 family = skops->family;
	if (family != AF_INET && family != AF_INET6)
		return 1;
	struct steer_addr key;
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		/* The client's side: if it was steered, leave its storage where the proxy's
		 * side of the handshake will find it, under the client's address. */
		struct steer_info *info = bpf_sk_storage_get(&steered, sk, 0, 0);
		if (!info)
			return 1;
		__u32 ip6[4] = {skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2], skops->local_ip6[3]};
		sockops_addr(&key, family, skops->local_ip4, ip6, (__u16)skops->local_port);
		bpf_map_update_elem(&pending, &key, info, BPF_ANY);
		return 1;
	}
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: {
		/* The proxy's side (or any server's: one lookup tells). */
		__u32 ip6[4] = {skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2], skops->remote_ip6[3]};
		sockops_addr(&key, family, skops->remote_ip4, ip6, (__u16)bpf_ntohl(skops->remote_port));
		struct steer_info *info = bpf_map_lookup_elem(&pending, &key);
		if (!info)
			return 1;
		struct steer_info *mine = bpf_sk_storage_get(&steered, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (mine) {
			__builtin_memcpy(mine, info, sizeof(*mine));
			mine->accepted = 1;
			count(1);
		}
		bpf_map_delete_elem(&pending, &key);
		return 1;
	}
	}
	return 1;
}

/* A connection from another host: loopback sources are local processes, steered (or not)
 * at their connect(), and the proxy's own connections to the server are among them. */
SEC("sk_lookup")
int steer_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	struct steer_prefix src = {.prefixlen = 128};
	struct steer_addr client = {}, server = {};
	if (ctx->family == AF_INET) {
		__u32 ip4 = ctx->remote_ip4;
		if ((bpf_ntohl(ip4) >> 24) == 127)
			return SK_PASS;
		src.addr[10] = src.addr[11] = 0xff;
		__builtin_memcpy(&src.addr[12], &ip4, 4);
	} else if (ctx->family == AF_INET6) {
		__u32 ip6[4] = {ctx->remote_ip6[0], ctx->remote_ip6[1], ctx->remote_ip6[2], ctx->remote_ip6[3]};
		if (!ip6[0] && !ip6[1] && ((!ip6[2] && ip6[3] == bpf_htonl(1)) ||
					   (ip6[2] == bpf_htonl(0xffff) && (bpf_ntohl(ip6[3]) >> 24) == 127)))
			return SK_PASS;
		__builtin_memcpy(src.addr, ip6, 16);
	} else {
		return SK_PASS;
	}
	__u16 port = (__u16)ctx->local_port;
	if (!bpf_map_lookup_elem(&governed_ports, &port))
		return SK_PASS;
	__u32 *sel = bpf_map_lookup_elem(&flagged_sources, &src);
	if (!sel)
		return SK_PASS;
	__u32 selector = *sel;
	server.port = port;
	struct bpf_sock *proxy = bpf_map_lookup_elem(&proxy_listeners, &server);
	if (!proxy) {
		count(4);
		return SK_DROP;
	}
	long err = bpf_sk_assign(ctx, proxy, 0);
	bpf_sk_release(proxy);
	if (err)
		return SK_PASS;
	__builtin_memcpy(client.addr, src.addr, 16);
	client.port = bpf_ntohs(ctx->remote_port);
	bpf_map_update_elem(&remote_steered, &client, &selector, BPF_ANY);
	count(3);
	return SK_PASS;
}

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
struct linux_binprm {
	const char *filename;
};
#pragma clang attribute pop

/* A process that execs a flagged executable is flagged; one flagged by an executable that
 * execs anything else stops being flagged. */
SEC("raw_tp/sched_process_exec")
int BPF_PROG(steer_exec, struct task_struct *task, int old_pid, struct linux_binprm *bprm)
{
	struct steer_path path = {};
	const char *filename = BPF_CORE_READ(bprm, filename);
	if (bpf_probe_read_kernel_str(path.name, sizeof(path.name), filename) < 0)
		return 0;
	__u32 tgid = BPF_CORE_READ(task, tgid);
	__u32 *sel = bpf_map_lookup_elem(&flagged_exes, &path);
	if (sel) {
		__u32 v = *sel | SEL_BY_EXE;
		bpf_map_update_elem(&flagged_tgids, &tgid, &v, BPF_ANY);
		return 0;
	}
	__u32 *cur = bpf_map_lookup_elem(&flagged_tgids, &tgid);
	if (cur && (*cur & SEL_BY_EXE))
		bpf_map_delete_elem(&flagged_tgids, &tgid);
	return 0;
}

/* A flagged process's children run the same executable until they exec: flagged from the
 * moment they exist. */
SEC("raw_tp/sched_process_fork")
int BPF_PROG(steer_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 *sel = bpf_map_lookup_elem(&flagged_tgids, &ptgid);
	if (!sel)
		return 0;
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	if (ctgid != ptgid)
		bpf_map_update_elem(&flagged_tgids, &ctgid, sel, BPF_ANY);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(steer_exit, struct task_struct *task)
{
	__u32 pid = BPF_CORE_READ(task, pid);
	__u32 tgid = BPF_CORE_READ(task, tgid);
	if (pid == tgid)
		bpf_map_delete_elem(&flagged_tgids, &tgid);
	return 0;
}
