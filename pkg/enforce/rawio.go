package enforce

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Plain TCP sessions read and write their sockets with raw system calls. The sockets are
// non-blocking (the runtime's poller waits for readiness), so a read or write never blocks
// in the kernel, and the runtime's bookkeeping for blocking system calls buys nothing. It
// costs a lot: every such call wakes the runtime's monitor thread when the process was
// idle, and the monitor then polls every 20 µs for the next millisecond. A proxy session
// goes idle between every pair of round trips, so that cycle repeats per transaction and
// was a fifth of the proxy's CPU in profiles (thread wake-ups and sleeps on 2 cores).

// rawIO returns a reader/writer for c that bypasses the runtime's system-call bookkeeping
// when c is a plain TCP connection (possibly one of the proxy's upstream connections), and
// c itself otherwise (TLS, or connections handed over by other code).
func rawIO(c net.Conn) io.ReadWriter {
	if uc, ok := c.(*upstreamConn); ok {
		c = uc.Conn
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	return &rawConn{rc: rc}
}

type rawConn struct{ rc syscall.RawConn }

// Read reads once, waiting in the runtime's poller while nothing is available, as
// net.Conn's Read does.
func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n uintptr
	var errno syscall.Errno
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			n, _, errno = syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			if errno != syscall.EINTR {
				return errno != syscall.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return int(n), nil
}

// Write writes all of p, waiting in the runtime's poller while the socket buffer is full.
func (c *rawConn) Write(p []byte) (int, error) {
	written := 0
	var errno syscall.Errno
	err := c.rc.Write(func(fd uintptr) bool {
		for written < len(p) {
			n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[written])), uintptr(len(p)-written))
			switch e {
			case 0:
				written += int(n)
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false
			default:
				errno = e
				return true
			}
		}
		return true
	})
	if err == nil && errno != 0 {
		err = os.NewSyscallError("write", errno)
	}
	return written, err
}
