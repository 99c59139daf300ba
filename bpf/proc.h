/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Emission of bytes a server process read or wrote (TLS plaintext, Unix-socket data),
 * shared by the uprobe and syscall hooks. Each (process, fd, direction) stream carries a
 * running byte offset so userspace can see a hole when a record is lost. */
#ifndef __VIGIL_PROC_H__
#define __VIGIL_PROC_H__

#include "common.h"

/* The watched server processes, whose TLS plaintext and Unix-socket I/O are captured:
 * postmasters (from userspace) and, added in the kernel at fork, their children (the
 * backends). The TLS uprobes are attached per binary and so fire in every process running
 * it, servers the agent was not told to watch included: this set is what confines them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} watched_tgids SEC(".maps");

struct stream_key {
	__u32 tgid;
	__s32 fd;
	__u8 kind; /* REC_TLS or REC_UNIX */
	__u8 write;
	__u8 _pad[2];
	/* REC_UNIX: the capture period (unix_epoch): a stream seen again after Unix capture was
	 * off starts a new key at offset 0, since what passed while off was not seen. */
	__u32 epoch;
	__u64 start_time; /* of the process: a reused pid must not continue a dead stream */
};

/* Next byte offset per stream. LRU: streams of exited processes age out on their own; an
 * evicted stream restarts at 0, which userspace reads as a new stream start. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct stream_key);
	__type(value, __u64);
} stream_offsets SEC(".maps");

/* The arguments of a read/write in flight, saved at entry and consumed at return, when
 * the number of bytes actually transferred is known. */
struct io_args {
	__u64 buf;
	__s32 fd;
	__u32 peer; /* see proc_hdr.peer */
	__u32 epoch; /* see stream_key.epoch */
	__u32 _pad;
};

/* fd → struct file → struct socket → struct sock, walked in the current task's fd table;
 * NULL unless fd is a socket. Not cached per fd: a cache would go stale when the fd is
 * closed and reused, and callers walk only for watched processes. */
static __always_inline struct sock *fd_sock(__s32 fd, short *type)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd < 0 || (__u32)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f)
		return NULL;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	if (!sock)
		return NULL;
	*type = BPF_CORE_READ(sock, type);
	return BPF_CORE_READ(sock, sk);
}

/* Reports the TCP connection a server process serves on fd (REC_TLS_SOCK). */
static __always_inline void emit_tls_sock(__u32 tgid, __s32 fd)
{
	short type = 0;
	struct sock *sk = fd_sock(fd, &type);
	if (!sk || type != SOCK_STREAM)
		return;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return;
	struct tls_sock_rec *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_lost(HOOK_TLS, 1, 0);
		return;
	}
	__builtin_memset(r, 0, sizeof(*r));
	r->kind = REC_TLS_SOCK;
	r->family = family;
	r->pid = tgid;
	r->fd = fd;
	r->ktime = bpf_ktime_get_ns();
	/* The server's end: local is the server, the peer the client. */
	r->dport = BPF_CORE_READ(sk, __sk_common.skc_num);
	r->sport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET6) {
		BPF_CORE_READ_INTO(r->daddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(r->saddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__be32 *)r->daddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__be32 *)r->saddr, sk, __sk_common.skc_daddr);
	}
	bpf_ringbuf_submit(r, ring_flags());
}

static __always_inline void emit_proc(__u8 kind, __u32 hook, bool write, struct io_args *args, __u64 size)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct task_struct *task = (void *)bpf_get_current_task();
	__s32 fd = args->fd;
	__u64 buf = args->buf;
	struct stream_key key = {
		.tgid = id >> 32,
		.fd = fd,
		.kind = kind,
		.write = write,
		.epoch = args->epoch,
		.start_time = BPF_CORE_READ(task, group_leader, start_time),
	};
	__u64 zero = 0, start;
	__u64 *next = bpf_map_lookup_elem(&stream_offsets, &key);
	if (!next) {
		/* A stream new to the kernel: name its connection first, so a session read after
		 * its process exited still knows its client (once per connection, on the read
		 * side, which a backend's TLS stream starts with). */
		if (kind == REC_TLS && !write)
			emit_tls_sock(key.tgid, fd);
		bpf_map_update_elem(&stream_offsets, &key, &zero, BPF_NOEXIST);
		next = bpf_map_lookup_elem(&stream_offsets, &key);
	}
	start = next ? *next : 0;
	/* Advance the offset before emitting: a record that fails below leaves a gap in
	 * the offsets userspace sees, which is exactly how it learns of the loss. */
	if (next)
		__sync_fetch_and_add(next, size);

	union scratch *s = scratch_slot(SCRATCH_TASK);
	if (!s) {
		count_lost(hook, 1, size);
		return;
	}
	struct proc_hdr *hdr = &s->proc.hdr;
	hdr->kind = kind;
	hdr->write = write;
	hdr->_pad0 = 0;
	hdr->peer = args->peer;
	hdr->pid = id >> 32;
	hdr->tid = (__u32)id;
	hdr->fd = fd;
	hdr->ktime = bpf_ktime_get_ns();

	__u64 off = 0;
	for (int i = 0; i < MAX_CHUNKS; i++) {
		if (off >= size)
			break;
		__u32 n = chunk_len(size - off > CHUNK_BYTES ? CHUNK_BYTES : (__u32)(size - off));
		hdr->len = n;
		hdr->offset = start + off;
		/* The first bytes of a stream wake the reader at once: it looks the connection's
		 * processes up in /proc once, and a short session's client may be gone by the next
		 * poll. Once per connection, so the cost stays off the per-statement path. */
		__u64 flags = start + off == 0 ? BPF_RB_FORCE_WAKEUP : ring_flags();
		if (n == 0 || bpf_probe_read_user(s->proc.data, n, (void *)(buf + off)) ||
		    bpf_ringbuf_output(&events, &s->proc, sizeof(*hdr) + n, flags))
			count_lost(hook, 1, n);
		off += n;
	}
	if (off < size)
		count_lost(hook, 1, size - off);
}

#endif /* __VIGIL_PROC_H__ */
