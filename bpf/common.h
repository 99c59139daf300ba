/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Maps and helpers shared by every capture hook: the ring buffer, loss counters, the
 * per-CPU scratch records and batched wakeups. */
#ifndef __VIGIL_COMMON_H__
#define __VIGIL_COMMON_H__

#include "vigil_vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>

#include "records.h"

/* Userspace sets the size (Config.RingBytes) before loading. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} events SEC(".maps");

/* Waking the reader for every record costs more than the capture itself (measured 0.55×
 * TPS), so records are written without a wakeup and the reader polls on a short timer; only
 * when this much data is pending do we force a wakeup so the ring never fills. */
const volatile __u64 wakeup_bytes = 256 << 10;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HOOK_COUNT);
	__type(key, __u32);
	__type(value, struct lost_stats);
} lost SEC(".maps");

/* Data records are assembled in a per-CPU scratch area and copied into the ring with
 * bpf_ringbuf_output, which (unlike bpf_ringbuf_reserve) takes a variable size: a 60-byte
 * query costs 60 bytes of ring, not a whole chunk. Two slots, because a TCX program runs in
 * softirq and can interrupt a task-context program (uprobe, syscall tracepoint) on the same
 * CPU halfway through filling its slot; task-context programs never nest among themselves
 * (the kernel's bpf_prog_active guard). */
enum scratch_slot {
	SCRATCH_TASK = 0,
	SCRATCH_SOFTIRQ = 1,
};

struct seg_scratch {
	struct seg_hdr hdr;
	__u8 data[CHUNK_BYTES];
};

struct proc_scratch {
	struct proc_hdr hdr;
	__u8 data[CHUNK_BYTES];
};

union scratch {
	struct seg_scratch seg;
	struct proc_scratch proc;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, union scratch);
} scratch SEC(".maps");

static __always_inline union scratch *scratch_slot(__u32 slot)
{
	return bpf_map_lookup_elem(&scratch, &slot);
}

static __always_inline __u64 ring_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline void count_lost(__u32 hook, __u64 records, __u64 bytes)
{
	struct lost_stats *s = bpf_map_lookup_elem(&lost, &hook);
	if (!s)
		return;
	s->records += records;
	s->bytes += bytes;
}

/* Clamp n to [0, CHUNK_BYTES] in a way the verifier can follow through clang's codegen. */
static __always_inline __u32 chunk_len(__u32 remaining)
{
	__u32 n = remaining;
	if (n > CHUNK_BYTES)
		n = CHUNK_BYTES;
	asm volatile("" : "+r"(n));
	if (n > CHUNK_BYTES)
		n = 0;
	return n;
}

#endif /* __VIGIL_COMMON_H__ */
