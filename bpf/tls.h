/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* TLS plaintext of PostgreSQL connections: uprobes on the server's be_tls_read and
 * be_tls_write, which run only for TLS connections (secure_read/secure_write would also
 * fire for every plaintext read, which TCX already sees). The buffer is read at return,
 * once the byte count is known. Attached per server binary by userspace; recorded only in
 * watched processes (watched_tgids, proc.h). (BPF_KPROBE and BPF_KRETPROBE only unpack
 * registers; they serve uprobes as well.) */
#ifndef __VIGIL_TLS_H__
#define __VIGIL_TLS_H__

#include "proc.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct io_args);
} tls_args SEC(".maps");

/* ssize_t be_tls_read(Port *port, void *ptr, size_t len, int *waitfor), and the same shape
 * for be_tls_write. Port begins with `pgsocket sock`, the connection's fd. */
static __always_inline int tls_enter(void *port, void *ptr)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	/* A server sharing the binary with a watched one but not watched itself. */
	if (!bpf_map_lookup_elem(&watched_tgids, &tgid))
		return 0;
	struct io_args a = {.buf = (__u64)ptr, .fd = -1};
	bpf_probe_read_user(&a.fd, sizeof(a.fd), port);
	bpf_map_update_elem(&tls_args, &id, &a, BPF_ANY);
	return 0;
}

static __always_inline int tls_exit(long ret, bool write)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct io_args *a = bpf_map_lookup_elem(&tls_args, &id);
	if (!a)
		return 0;
	struct io_args args = *a;
	bpf_map_delete_elem(&tls_args, &id);
	if (ret > 0)
		emit_proc(REC_TLS, HOOK_TLS, write, &args, ret);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(pg_tls_read_enter, void *port, void *ptr)
{
	return tls_enter(port, ptr);
}

SEC("uretprobe")
int BPF_KRETPROBE(pg_tls_read_exit, long ret)
{
	return tls_exit(ret, false);
}

SEC("uprobe")
int BPF_KPROBE(pg_tls_write_enter, void *port, void *ptr)
{
	return tls_enter(port, ptr);
}

SEC("uretprobe")
int BPF_KRETPROBE(pg_tls_write_exit, long ret)
{
	return tls_exit(ret, true);
}

#endif /* __VIGIL_TLS_H__ */
