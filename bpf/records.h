/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Ring buffer records: the contract between the kernel programs and the Go reader
 * (pkg/capture/ebpf). bpf2go turns these structs into Go types, so both halves share one
 * definition. Every record starts with a one-byte kind; data records are a fixed header
 * followed by `len` payload bytes.
 */
#ifndef __VIGIL_RECORDS_H__
#define __VIGIL_RECORDS_H__

/* Largest payload carried by one record. A longer packet or read is emitted as several
 * consecutive records; 64 KiB GSO packets therefore take four. */
#define CHUNK_BYTES 16384
/* Most records one packet or one read/write produces (8 × 16 KiB = 128 KiB); bytes beyond
 * are counted as lost, never dropped silently. */
#define MAX_CHUNKS 8

enum rec_kind {
	REC_SEGMENT = 1, /* TCP payload chunk or SYN/FIN/RST seen by TCX */
	REC_TLS = 2,     /* TLS plaintext from the PostgreSQL server's be_tls_read/write */
	REC_UNIX = 3,    /* Unix-socket data read or written by a watched process */
	REC_CONN = 4,    /* a watched TCP connection opened by a local process, or closed */
	REC_UNIX_CONNECT = 5, /* a local process connected to a PostgreSQL Unix socket */
	REC_TLS_SOCK = 6, /* the TCP connection under a server process's new TLS stream */
};

/* Hooks whose losses are counted separately, index into the lost map. */
enum hook_id {
	HOOK_TCX = 0,
	HOOK_TLS = 1,
	HOOK_UNIX = 2,
	HOOK_CONN = 3,
	HOOK_UNIX_CONNECT = 4,
	HOOK_COUNT = 5,
};

enum seg_flags {
	SEG_SYN = 1, /* set on the first chunk of a SYN packet */
	SEG_FIN = 2, /* set on the last chunk of a FIN packet */
	SEG_RST = 4, /* set on the last chunk of a RST packet */
};

struct seg_hdr {
	__u8 kind;   /* REC_SEGMENT */
	__u8 flags;  /* enum seg_flags */
	__u8 family; /* AF_INET or AF_INET6 */
	__u8 _pad0;
	__u16 sport; /* host byte order */
	__u16 dport;
	__u32 seq; /* TCP sequence number of the first payload byte in this record */
	__u32 ifindex;
	__u32 len; /* payload bytes following the header */
	__u32 _pad1;
	__u64 ktime; /* CLOCK_MONOTONIC ns */
	__u8 saddr[16]; /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
};

struct proc_hdr {
	__u8 kind;  /* REC_TLS or REC_UNIX */
	__u8 write; /* 1: the server process wrote (server→client); 0: it read */
	__u16 _pad0;
	__u32 len; /* payload bytes following the header */
	__u32 pid; /* tgid */
	__u32 tid;
	__s32 fd;
	/* REC_UNIX: the client process (tgid) on the other end of the socket, from the
	 * credentials the kernel recorded at connect (they outlive the client); 0 for REC_TLS
	 * or when unknown */
	__u32 peer;
	__u64 offset; /* byte offset of this payload within the (pid, fd, direction) stream */
	__u64 ktime;
};

struct conn_rec {
	__u8 kind;   /* REC_CONN */
	__u8 closed; /* 0: a local process's connect completed; 1: the socket went to TCP_CLOSE */
	__u8 family;
	__u8 _pad0;
	__u16 sport; /* client port, host byte order */
	__u16 dport; /* server port */
	__u32 pid;   /* thread id of the connecting task; zero on close */
	__u32 tgid;
	__u32 uid;
	__u32 _pad1;
	__u64 cgroup_id;
	__u64 ktime;
	__u8 saddr[16]; /* client address */
	__u8 daddr[16]; /* server address */
	char comm[16];
};

/* Emitted before the first record of a new TLS read stream, from the fd the server read
 * (Port->sock): which TCP connection the process serves, known even if it has exited by
 * the time userspace reads its records. Counted under HOOK_TLS. */
struct tls_sock_rec {
	__u8 kind;   /* REC_TLS_SOCK */
	__u8 family; /* AF_INET or AF_INET6 */
	__u16 sport; /* client port, host byte order */
	__u16 dport; /* server port */
	__u16 _pad0;
	__u32 pid; /* tgid of the server process */
	__s32 fd;
	__u64 ktime;
	__u8 saddr[16]; /* client address */
	__u8 daddr[16]; /* server address */
};

/* A connect() to a Unix socket whose file name is PostgreSQL's (".s.PGSQL.<port>"), in the
 * connecting process's context, before the server has accepted. */
struct unix_connect_rec {
	__u8 kind;    /* REC_UNIX_CONNECT */
	__u8 _pad0;
	__u16 port;   /* from the file name */
	__u32 pid;    /* thread id of the connecting task */
	__u32 tgid;
	__u32 uid;
	__u64 cgroup_id;
	__u64 ktime;
	char comm[16];
	__u32 path_len; /* bytes of path used; an abstract socket's path starts with a NUL */
	__u32 _pad1;
	/* sun_path (UNIX_PATH_MAX bytes), zero-padded to a power of two so the program can mask
	 * its indexes into bounds */
	char path[128];
};

/* Per-CPU loss counters, one slot per hook. */
struct lost_stats {
	__u64 records; /* records that could not be written to the ring */
	__u64 bytes;   /* payload bytes those records (or oversized packets) carried */
};

#endif /* __VIGIL_RECORDS_H__ */
