package ebpf

import (
	"time"

	"golang.org/x/sys/unix"
)

// KtimeToTime converts a record's Ktime (bpf_ktime_get_ns: CLOCK_MONOTONIC nanoseconds) to
// wall-clock time. The offset is taken afresh on each call, so a wall-clock step (NTP) applies
// to later conversions rather than skewing every one after start-up.
func KtimeToTime(ktime uint64) time.Time {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		// CLOCK_MONOTONIC cannot fail on Linux; if it ever did, "now" is the best guess.
		return now.Round(0)
	}
	return now.Add(-time.Duration(ts.Nano() - int64(ktime))).Round(0)
}
