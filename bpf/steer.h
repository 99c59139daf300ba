/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Map layouts shared by the steering programs (steer.c) and pkg/steer, which bpf2go mirrors
 * in Go. */
#ifndef __VIGIL_STEER_H__
#define __VIGIL_STEER_H__

/* An address and port: IPv6, or IPv4 as v4-mapped (::ffff:a.b.c.d). Port in host byte
 * order. */
struct steer_addr {
	__u8 addr[16];
	__u16 port;
	__u16 _pad;
};

/* A source network, as an LPM trie key: prefix length over the IPv6/v4-mapped address. */
struct steer_prefix {
	__u32 prefixlen;
	__u8 addr[16];
};

/* An executable's path as given to execve, NUL-padded. */
struct steer_path {
	char name[256];
};

/* What a steered connection was steered from, and who opened it, as the kernel saw them
 * at connect(). */
struct steer_info {
	struct steer_addr orig; /* the server the client dialled */
	__u16 family;           /* AF_INET or AF_INET6: the family of the client's socket */
	/* 1 on the proxy's side (the copy made when it accepted): its peer is the client's
	 * real address, which getpeername and accept must keep telling it */
	__u8 accepted;
	__u8 _pad;
	__u32 selector; /* which selector flagged the process (pkg/steer numbers them) */
	__u32 pid;      /* thread that called connect() */
	__u32 tgid;     /* its process */
	__u32 uid;
	__u32 gid;
	__u64 cgroup_id; /* cgroup v2 id of the process at connect() */
	__u64 ktime;     /* CLOCK_MONOTONIC ns of the connect() */
	char comm[16];
};

#endif /* __VIGIL_STEER_H__ */
