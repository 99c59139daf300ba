package enforce

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// errClientGone withdraws a held statement whose client closed its connection: nobody is
// left to run it for, and an approver must not grant what no one waits for.
var errClientGone = errors.New("the client disconnected")

// clientGone reports whether the peer of c has closed or reset the connection, without
// consuming anything: a non-blocking peek at the socket that meets end of file or an error.
// Bytes waiting (a message the client sent behind the held one) mean it is still there.
func clientGone(c net.Conn) bool {
	for {
		t, ok := c.(*tls.Conn)
		if !ok {
			break
		}
		c = t.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	gone := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		gone = (err == nil && n == 0) || (err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR))
		return true // never wait for readiness: this is a poll
	})
	return err == nil && gone
}
