/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Plaintext TCP to and from database servers, seen at TCX: every payload byte of a packet
 * whose source or destination port is a watched server port, plus flag-only records for
 * SYN/FIN/RST so userspace sees flows begin and end. Traffic is never altered. */
#ifndef __VIGIL_TCX_H__
#define __VIGIL_TCX_H__

#include "common.h"

/* watched_ports[port] != 0 marks a database server port. An array indexed by port, not a
 * hash: the verifier inlines array lookups, and every packet on the host pays this check. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
} watched_ports SEC(".maps");

static __always_inline bool port_watched(__u16 port)
{
	__u32 key = port;
	__u8 *on = bpf_map_lookup_elem(&watched_ports, &key);
	return on && *on;
}

/* Headers loaded in one helper call: IPv4 without options (the usual case) followed by
 * the fixed TCP header, or IPv6 followed by TCP. */
struct v4_tcp {
	struct iphdr ip;
	struct tcphdr tcp;
};

struct v6_tcp {
	struct ipv6hdr ip;
	struct tcphdr tcp;
};

/* Where the network header starts relative to skb->data, which bpf_skb_load_bytes counts
 * from: after a 14-byte Ethernet header (Ethernet, veth, lo) or at 0 (L3 devices: tun,
 * wireguard). bpf_skb_load_bytes_relative knows the network header but reads only the
 * linear part of the skb, and payload often sits in page fragments, so the payload is read
 * with bpf_skb_load_bytes at an offset from skb->data. The candidate offset is confirmed by
 * finding the network header's first 8 bytes there. */
static __always_inline int net_offset(struct __sk_buff *skb, __u64 first8)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + 14 + 8 <= end && *(__u64 *)(data + 14) == first8)
		return 14;
	if (data + 8 <= end && *(__u64 *)data == first8)
		return 0;
	return -1;
}

SEC("tc")
int capture_tcx(struct __sk_buff *skb)
{
	struct tcphdr tcp;
	__u32 payload_off, payload_len;
	__u8 family;
	__u8 saddr[16] = {}, daddr[16] = {};
	__u64 first8;

	/* Headers are read relative to the network header, so devices with and without an
	 * L2 header work alike. */
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct v4_tcp h;
		if (bpf_skb_load_bytes_relative(skb, 0, &h, sizeof(h), BPF_HDR_START_NET))
			return TCX_NEXT;
		if (h.ip.protocol != IPPROTO_TCP || (h.ip.frag_off & bpf_htons(0x1fff)))
			return TCX_NEXT;
		__u32 ihl = (h.ip.ver_ihl & 0x0f) * 4;
		tcp = h.tcp;
		if (!port_watched(bpf_ntohs(tcp.source)) && !port_watched(bpf_ntohs(tcp.dest))) {
			if (ihl == sizeof(struct iphdr))
				return TCX_NEXT;
			/* IP options moved the TCP header: reload it before deciding. */
			if (bpf_skb_load_bytes_relative(skb, ihl, &tcp, sizeof(tcp), BPF_HDR_START_NET))
				return TCX_NEXT;
			if (!port_watched(bpf_ntohs(tcp.source)) && !port_watched(bpf_ntohs(tcp.dest)))
				return TCX_NEXT;
		} else if (ihl != sizeof(struct iphdr)) {
			if (bpf_skb_load_bytes_relative(skb, ihl, &tcp, sizeof(tcp), BPF_HDR_START_NET))
				return TCX_NEXT;
		}
		__builtin_memcpy(&first8, &h.ip, 8);
		__u32 tot = bpf_ntohs(h.ip.tot_len);
		__u32 doff = (tcp.doff_res >> 4) * 4;
		family = AF_INET;
		__builtin_memcpy(saddr, &h.ip.saddr, 4);
		__builtin_memcpy(daddr, &h.ip.daddr, 4);
		payload_off = ihl + doff;
		if (tot == 0) {
			/* BIG TCP: tot_len does not hold the length; we cannot tell where the
			 * payload ends, so count the packet as lost rather than guess. */
			count_lost(HOOK_TCX, 1, skb->len);
			return TCX_NEXT;
		}
		payload_len = tot > payload_off ? tot - payload_off : 0;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct v6_tcp h;
		if (bpf_skb_load_bytes_relative(skb, 0, &h, sizeof(h), BPF_HDR_START_NET))
			return TCX_NEXT;
		/* Extension headers before TCP are not followed; database traffic does not
		 * carry them. */
		if (h.ip.nexthdr != IPPROTO_TCP)
			return TCX_NEXT;
		tcp = h.tcp;
		if (!port_watched(bpf_ntohs(tcp.source)) && !port_watched(bpf_ntohs(tcp.dest)))
			return TCX_NEXT;
		__builtin_memcpy(&first8, &h.ip, 8);
		__u32 plen = bpf_ntohs(h.ip.payload_len);
		__u32 doff = (tcp.doff_res >> 4) * 4;
		family = AF_INET6;
		__builtin_memcpy(saddr, h.ip.saddr, 16);
		__builtin_memcpy(daddr, h.ip.daddr, 16);
		payload_off = sizeof(struct ipv6hdr) + doff;
		if (plen == 0) {
			count_lost(HOOK_TCX, 1, skb->len);
			return TCX_NEXT;
		}
		payload_len = plen > doff ? plen - doff : 0;
	} else {
		return TCX_NEXT;
	}

	__u8 tflags = tcp.flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST);
	if (payload_len == 0 && !tflags)
		return TCX_NEXT; /* pure ACK */

	if (payload_len) {
		int l2 = net_offset(skb, first8);
		if (l2 < 0) {
			/* Framing we do not know: say so in the loss counters. */
			count_lost(HOOK_TCX, 1, payload_len);
			return TCX_NEXT;
		}
		payload_off += l2;
	}

	union scratch *s = scratch_slot(SCRATCH_SOFTIRQ);
	if (!s)
		return TCX_NEXT;
	struct seg_hdr *hdr = &s->seg.hdr;
	hdr->kind = REC_SEGMENT;
	hdr->family = family;
	hdr->_pad0 = 0;
	hdr->_pad1 = 0;
	hdr->sport = bpf_ntohs(tcp.source);
	hdr->dport = bpf_ntohs(tcp.dest);
	hdr->ifindex = skb->ifindex;
	hdr->ktime = bpf_ktime_get_ns();
	__builtin_memcpy(hdr->saddr, saddr, 16);
	__builtin_memcpy(hdr->daddr, daddr, 16);
	__u32 seq = bpf_ntohl(tcp.seq);

	if (payload_len == 0) {
		hdr->flags = (tflags & TCP_FLAG_SYN ? SEG_SYN : 0) | (tflags & TCP_FLAG_FIN ? SEG_FIN : 0) |
			     (tflags & TCP_FLAG_RST ? SEG_RST : 0);
		hdr->seq = seq;
		hdr->len = 0;
		if (bpf_ringbuf_output(&events, hdr, sizeof(*hdr), ring_flags()))
			count_lost(HOOK_TCX, 1, 0);
		return TCX_NEXT;
	}

	__u32 off = 0;
	for (int i = 0; i < MAX_CHUNKS; i++) {
		if (off >= payload_len)
			break;
		__u32 n = chunk_len(payload_len - off);
		bool last = off + n >= payload_len;
		__u8 f = 0;
		if (i == 0 && (tflags & TCP_FLAG_SYN))
			f |= SEG_SYN;
		if (last && (tflags & TCP_FLAG_FIN))
			f |= SEG_FIN;
		if (last && (tflags & TCP_FLAG_RST))
			f |= SEG_RST;
		hdr->flags = f;
		hdr->seq = seq + off;
		hdr->len = n;
		if (n == 0 || bpf_skb_load_bytes(skb, payload_off + off, s->seg.data, n) ||
		    bpf_ringbuf_output(&events, &s->seg, sizeof(*hdr) + n, ring_flags()))
			count_lost(HOOK_TCX, 1, n);
		off += n;
	}
	if (off < payload_len)
		count_lost(HOOK_TCX, 1, payload_len - off);
	return TCX_NEXT;
}

#endif /* __VIGIL_TCX_H__ */
