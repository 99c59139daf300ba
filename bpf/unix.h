/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Unix-socket traffic of PostgreSQL backends, which no network hook sees. A backend reads
 * its client socket with recvfrom and writes it with sendto (verified with strace on
 * PostgreSQL 15). Enabling any syscall tracepoint slows every syscall on the host, so
 * userspace attaches these programs only while Unix capture is wanted, and the programs
 * bail out at once unless the caller is a watched process and the fd a stream AF_UNIX
 * socket. */
#ifndef __VIGIL_UNIX_H__
#define __VIGIL_UNIX_H__

#include "proc.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct io_args);
} unix_args SEC(".maps");

/* Layout of syscalls:sys_enter_* and sys_exit_* records (see the tracepoint's format
 * file): 8 bytes of common fields, the syscall number, then one 8-byte slot per argument. */
struct sys_enter_ctx {
	__u64 common;
	__s32 nr;
	__u32 _pad;
	__u64 args[6];
};

struct sys_exit_ctx {
	__u64 common;
	__s32 nr;
	__u32 _pad;
	__s64 ret;
};

/* The capture period: userspace bumps it each time it attaches the programs below, so
 * streams seen again after Unix capture was off restart at offset 0 (see stream_key). A
 * counter instead of clearing the offsets at detach, which took a scan of the map while
 * the next attach waited. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} unix_epoch SEC(".maps");

/* Whether fd is an AF_UNIX stream socket. *peer is then the process that connected to it
 * (the kernel's SO_PEERCRED pid, in the initial pid namespace like every pid the programs
 * report), 0 if none was recorded. */
static __always_inline bool fd_is_unix_stream(__s32 fd, __u32 *peer)
{
	short type = 0;
	struct sock *sk = fd_sock(fd, &type);
	if (!sk || type != SOCK_STREAM || BPF_CORE_READ(sk, __sk_common.skc_family) != AF_UNIX)
		return false;
	struct pid *p = BPF_CORE_READ(sk, sk_peer_pid);
	*peer = p ? BPF_CORE_READ(p, numbers[0].nr) : 0;
	return true;
}

static __always_inline int unix_enter(struct sys_enter_ctx *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (!bpf_map_lookup_elem(&watched_tgids, &tgid))
		return 0;
	__s32 fd = (__s32)ctx->args[0];
	__u32 peer = 0, zero = 0;
	if (!fd_is_unix_stream(fd, &peer))
		return 0;
	__u32 *epoch = bpf_map_lookup_elem(&unix_epoch, &zero);
	struct io_args a = {.buf = ctx->args[1], .fd = fd, .peer = peer, .epoch = epoch ? *epoch : 0};
	bpf_map_update_elem(&unix_args, &id, &a, BPF_ANY);
	return 0;
}

static __always_inline int unix_exit(struct sys_exit_ctx *ctx, bool write)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct io_args *a = bpf_map_lookup_elem(&unix_args, &id);
	if (!a)
		return 0;
	struct io_args args = *a;
	bpf_map_delete_elem(&unix_args, &id);
	/* An entry from an earlier capture period is a call whose exit went unseen while off
	 * (nothing clears the map at detach): this exit is another call's, entered before the
	 * attach, with other arguments. */
	__u32 zero = 0;
	__u32 *epoch = bpf_map_lookup_elem(&unix_epoch, &zero);
	if (ctx->ret > 0 && epoch && args.epoch == *epoch)
		emit_proc(REC_UNIX, HOOK_UNIX, write, &args, ctx->ret);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_recvfrom")
int unix_recvfrom_enter(struct sys_enter_ctx *ctx)
{
	return unix_enter(ctx);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int unix_recvfrom_exit(struct sys_exit_ctx *ctx)
{
	return unix_exit(ctx, false);
}

SEC("tracepoint/syscalls/sys_enter_sendto")
int unix_sendto_enter(struct sys_enter_ctx *ctx)
{
	return unix_enter(ctx);
}

SEC("tracepoint/syscalls/sys_exit_sendto")
int unix_sendto_exit(struct sys_exit_ctx *ctx)
{
	return unix_exit(ctx, true);
}

/* The trigger for the tracepoints above. Userspace keeps them detached while no
 * Unix-socket client of a watched server exists, and this hook tells it when one is about
 * to: a cgroup connect_unix program (attached to the root cgroup, so every process below
 * it) runs in the client's context on connect(), before the server has accepted, so
 * userspace usually attaches the tracepoints before the new backend reads the startup
 * message. It costs one path check per Unix connect() on the host, nothing per byte.
 * PostgreSQL names its sockets ".s.PGSQL.<port>" whatever the directory (which differs
 * between the client's and the agent's mount namespaces), so the file name is the filter;
 * userspace checks the port against the servers it watches. */

#define PG_SOCK_PREFIX ".s.PGSQL."
#define PG_SOCK_PREFIX_LEN 9
#define PATH_MASK 127 /* sizeof(unix_connect_rec.path) - 1 */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct unix_connect_rec);
} unix_connect_scratch SEC(".maps");

SEC("cgroup/connect_unix")
int unix_connect(struct bpf_sock_addr *ctx)
{
	/* The context is a struct bpf_sock_addr_kern underneath; its UAPI view has no path, so
	 * the address is read through the kernel struct (the address is the kernel's copy of
	 * the connect() argument). */
	struct bpf_sock_addr_kern *sa = (void *)ctx;
	struct sockaddr *uaddr = BPF_CORE_READ(sa, uaddr);
	__u32 len = BPF_CORE_READ(sa, uaddrlen);
	if (!uaddr || len <= 2)
		return 1;
	len -= 2; /* sun_family */
	if (len > UNIX_PATH_MAX)
		len = UNIX_PATH_MAX;

	__u32 zero = 0;
	struct unix_connect_rec *r = bpf_map_lookup_elem(&unix_connect_scratch, &zero);
	if (!r)
		return 1;
	__builtin_memset(r->path, 0, sizeof(r->path));
	if (bpf_probe_read_kernel(r->path, UNIX_PATH_MAX, (char *)uaddr + 2))
		return 1;

	/* A path name ends at its NUL; an abstract name starts with one and runs to len. */
	__u32 end = len;
	for (__u32 i = 1; i < UNIX_PATH_MAX; i++) {
		if (i >= len)
			break;
		if (r->path[i] == 0) {
			end = i;
			break;
		}
	}
	/* Matched from the end ("/.s.PGSQL." then 1–5 digits), not by finding the last '/'
	 * first: a loop carrying that position makes the verifier explore every value of it. */
	__u32 port = 0, mul = 1, digits = 0;
	for (int j = 0; j < 5; j++) {
		if (j >= end)
			break;
		char c = r->path[(end - 1 - j) & PATH_MASK];
		if (c < '0' || c > '9')
			break;
		port += (c - '0') * mul;
		mul *= 10;
		digits++;
	}
	if (digits == 0 || port == 0 || port > 65535 || end < digits + PG_SOCK_PREFIX_LEN)
		return 1;
	__u32 name = end - digits - PG_SOCK_PREFIX_LEN;
	const char prefix[] = PG_SOCK_PREFIX;
	for (int j = 0; j < PG_SOCK_PREFIX_LEN; j++)
		if (r->path[(name + j) & PATH_MASK] != prefix[j])
			return 1;
	/* The name is the whole file name: at the start, or after a '/' (or an abstract
	 * name's leading NUL). */
	if (name > 0 && r->path[(name - 1) & PATH_MASK] != '/' && !(name == 1 && r->path[0] == 0))
		return 1;

	__u64 id = bpf_get_current_pid_tgid();
	r->kind = REC_UNIX_CONNECT;
	r->_pad0 = 0;
	r->port = port;
	r->pid = (__u32)id;
	r->tgid = id >> 32;
	r->uid = (__u32)bpf_get_current_uid_gid();
	r->cgroup_id = bpf_get_current_cgroup_id();
	r->ktime = bpf_ktime_get_ns();
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	r->path_len = end;
	r->_pad1 = 0;
	/* Forced wakeup: userspace must attach the tracepoints before the backend reads. */
	if (bpf_ringbuf_output(&events, r, sizeof(*r), BPF_RB_FORCE_WAKEUP))
		count_lost(HOOK_UNIX_CONNECT, 1, 0);
	return 1; /* never deny a connect */
}

/* A watched process's children are watched from the moment they exist, so no backend
 * escapes between fork and a userspace reaction. Threads share the tgid and need nothing. */
SEC("raw_tp/sched_process_fork")
int BPF_PROG(track_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	if (!bpf_map_lookup_elem(&watched_tgids, &ptgid))
		return 0;
	__u32 ctgid = BPF_CORE_READ(child, tgid);
	if (ctgid == ptgid)
		return 0;
	__u8 on = 1;
	bpf_map_update_elem(&watched_tgids, &ctgid, &on, BPF_ANY);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(track_exit, struct task_struct *task)
{
	__u32 pid = BPF_CORE_READ(task, pid);
	__u32 tgid = BPF_CORE_READ(task, tgid);
	if (pid != tgid)
		return 0;
	bpf_map_delete_elem(&watched_tgids, &tgid);
	return 0;
}

#endif /* __VIGIL_UNIX_H__ */
