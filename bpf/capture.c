// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Vigil's kernel side of statement capture, one object loaded by pkg/capture/ebpf:
 *   tcx.h  plaintext TCP payloads of database ports (TCX ingress/egress)
 *   tls.h  TLS plaintext from PostgreSQL's be_tls_read/be_tls_write (uprobes), and the TCP
 *          connection under each new TLS stream
 *   unix.h Unix-socket data of watched server processes (syscall tracepoints), the fork/exit
 *          tracking that keeps the watched set current, and the connect hook that tells
 *          userspace when to switch the tracepoints on
 *   conn.h the local process behind each connection to a database port
 * Record layouts are in records.h. Dual-licensed: the tracing helpers need a GPL-compatible license. */
#include "tcx.h"
#include "tls.h"
#include "unix.h"
#include "conn.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Only types of globals reach BTF; these give bpf2go the record layouts to mirror in Go. */
const struct seg_hdr *unused_seg_hdr __attribute__((unused));
const struct proc_hdr *unused_proc_hdr __attribute__((unused));
const struct conn_rec *unused_conn_rec __attribute__((unused));
const struct unix_connect_rec *unused_unix_connect_rec __attribute__((unused));
const struct tls_sock_rec *unused_tls_sock_rec __attribute__((unused));
const enum rec_kind *unused_rec_kind __attribute__((unused));
const enum hook_id *unused_hook_id __attribute__((unused));
const enum seg_flags *unused_seg_flags __attribute__((unused));
