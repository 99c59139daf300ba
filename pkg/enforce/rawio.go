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
	return newRawConn(rc)
}

// rawConn keeps the state of the call in progress in its fields, and the callbacks the
// runtime's poller calls as method values bound once, so that a read or write allocates
// nothing. A session reads each connection from one goroutine and writes it from one, so
// two reads (or two writes) never overlap.
type rawConn struct {
	rc             syscall.RawConn
	readFn, wrFn   func(fd uintptr) bool
	rbuf, wbuf     []byte
	rn, written    int
	rerrno, werrno syscall.Errno
}

func newRawConn(rc syscall.RawConn) *rawConn {
	c := &rawConn{rc: rc}
	c.readFn, c.wrFn = c.readOnce, c.writeAll
	return c
}

// Read reads once, waiting in the runtime's poller while nothing is available, as
// net.Conn's Read does.
func (c *rawConn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	c.rbuf, c.rn, c.rerrno = p, 0, 0
	err := c.rc.Read(c.readFn)
	n, errno := c.rn, c.rerrno
	c.rbuf = nil
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (c *rawConn) readOnce(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch errno {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		c.rn, c.rerrno = int(n), errno
		return true
	}
}

// Write writes all of p, waiting in the runtime's poller while the socket buffer is full.
func (c *rawConn) Write(p []byte) (int, error) {
	c.wbuf, c.written, c.werrno = p, 0, 0
	err := c.rc.Write(c.wrFn)
	written, errno := c.written, c.werrno
	c.wbuf = nil
	if err == nil && errno != 0 {
		err = os.NewSyscallError("write", errno)
	}
	return written, err
}

func (c *rawConn) writeAll(fd uintptr) bool {
	for c.written < len(c.wbuf) {
		p := c.wbuf[c.written:]
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch errno {
		case 0:
			c.written += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werrno = errno
			return true
		}
	}
	return true
}
