package identity

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestUnixPeerCred(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	pid, uid, err := UnixPeerCred(os.Getpid(), fds[0])
	if err != nil {
		t.Fatal(err)
	}
	if pid != os.Getpid() || uid != os.Getuid() {
		t.Fatalf("UnixPeerCred = pid %d uid %d, want %d %d", pid, uid, os.Getpid(), os.Getuid())
	}
	if _, _, err := UnixPeerCred(os.Getpid(), 1<<20); err == nil {
		t.Fatal("UnixPeerCred of a closed fd: want an error")
	}
}
