package ebpf

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ringWaiter waits for the ring buffer's wake-ups in Go's network poller instead of in a
// blocking epoll_wait. A goroutine blocked in a system call for more than 20 µs makes the
// runtime's monitor thread take its P and then poll every 20 µs for a while; with the
// reader blocking every poll interval, the monitor never slowed down — tens of thousands of
// wake-ups a second, an eighth of the agent's CPU under pgbench. Parked in the poller, the
// reader costs nothing while it waits.
type ringWaiter struct {
	f  *os.File
	rc syscall.RawConn
}

// newRingWaiter watches a ring buffer map's fd (duplicated: the waiter closes its own).
// It fails when the runtime's poller cannot watch the fd; the caller then waits in the
// reader's own epoll_wait.
func newRingWaiter(mapFD int) (*ringWaiter, error) {
	fd, err := unix.FcntlInt(uintptr(mapFD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating the ring buffer fd: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ring buffer fd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "ringbuf")
	// A deadline is only accepted for an fd the poller watches.
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		f.Close()
		return nil, fmt.Errorf("ring buffer fd not pollable by the runtime: %w", err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &ringWaiter{f: f, rc: rc}, nil
}

// wait returns when the kernel wakes readers of the ring (a forced wake-up, or pending
// data past the wake-up threshold) or after d.
func (w *ringWaiter) wait(d time.Duration) {
	_ = w.f.SetReadDeadline(time.Now().Add(d))
	parked := false
	// The first call reports "not ready" so that the poller parks the goroutine until
	// the fd signals readiness or the deadline passes; the second ends the wait.
	_ = w.rc.Read(func(uintptr) bool {
		done := parked
		parked = true
		return done
	})
}

func (w *ringWaiter) close() error { return w.f.Close() }
