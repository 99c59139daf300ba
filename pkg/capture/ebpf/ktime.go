package ebpf

import (
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// bootOffset is wall-clock time minus CLOCK_MONOTONIC, in nanoseconds, with the moment it
// was measured. Measuring it costs a real clock_gettime syscall (x/sys/unix does not use the
// vDSO), which per record was a tenth of the agent's CPU; so it is measured at most every
// offsetTTL, which still lets a wall-clock step (NTP) apply within that time.
var bootOffset atomic.Pointer[offset]

type offset struct {
	ns       int64
	measured time.Time // monotonic reading of when
}

const offsetTTL = time.Second

// KtimeToTime converts a record's Ktime (bpf_ktime_get_ns: CLOCK_MONOTONIC nanoseconds) to
// wall-clock time.
func KtimeToTime(ktime uint64) time.Time {
	o := bootOffset.Load()
	if o == nil || time.Since(o.measured) > offsetTTL {
		o = measureOffset()
	}
	return time.Unix(0, int64(ktime)+o.ns)
}

func measureOffset() *offset {
	var ts unix.Timespec
	now := time.Now()
	o := &offset{measured: now}
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err == nil {
		// CLOCK_MONOTONIC cannot fail on Linux; if it ever did, the offset stays 0 and the
		// next measurement retries.
		o.ns = now.UnixNano() - ts.Nano()
	}
	bootOffset.Store(o)
	return o
}
