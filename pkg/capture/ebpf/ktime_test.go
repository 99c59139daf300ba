package ebpf

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestKtimeToTime(t *testing.T) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ago  time.Duration
	}{
		{"now", 0},
		{"a second ago", time.Second},
		{"a minute ago", time.Minute},
	}
	for _, tt := range tests {
		got := KtimeToTime(uint64(ts.Nano() - int64(tt.ago)))
		want := time.Now().Add(-tt.ago)
		if d := want.Sub(got); d < -50*time.Millisecond || d > 50*time.Millisecond {
			t.Errorf("%s: KtimeToTime = %v, want about %v", tt.name, got, want)
		}
	}
}
