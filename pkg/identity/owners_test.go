package identity

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// TestOwnerCache: a burst of connections from one process resolves to it, the second and
// later ones without a host-wide scan; a connection from another process still resolves to
// that process.
func TestOwnerCache(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var c OwnerCache
	for i := 0; i < 5; i++ {
		client, server := dialSelf(t, l)
		if pid, err := c.TCPOwner(client, server); err != nil || pid != os.Getpid() {
			t.Fatalf("connection %d: owner %d, %v; want %d", i, pid, err, os.Getpid())
		}
	}
	if len(c.recent) != 1 || c.recent[0] != os.Getpid() {
		t.Errorf("recent owners %v, want [%d]", c.recent, os.Getpid())
	}

	port := addrPort(l.Addr()).Port()
	cmd := exec.Command("bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/"+strconv.Itoa(int(port))+"; read -t 30 <&3")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	client, server := accept(t, l)
	if pid, err := c.TCPOwner(client, server); err != nil || pid != cmd.Process.Pid {
		t.Errorf("connection from bash: owner %d, %v; want %d", pid, err, cmd.Process.Pid)
	}
	if c.recent[0] != cmd.Process.Pid {
		t.Errorf("recent owners %v: bash should be first", c.recent)
	}
}

// BenchmarkOwnerCache is a lookup of a connection from a process the cache has seen:
// compare BenchmarkOwners, the host-wide scan it saves.
func BenchmarkOwnerCache(b *testing.B) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	client, server := dialSelf(b, l)
	var c OwnerCache
	for b.Loop() {
		if _, err := c.TCPOwner(client, server); err != nil {
			b.Fatal(err)
		}
	}
}

// dialSelf opens a connection from this process to l and returns its addresses as
// accepted; both ends close at cleanup.
func dialSelf(tb testing.TB, l net.Listener) (client, server netip.AddrPort) {
	tb.Helper()
	conn, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return accept(tb, l)
}

// accept takes the next connection to l and returns its client and server addresses; it
// closes at cleanup.
func accept(tb testing.TB, l net.Listener) (client, server netip.AddrPort) {
	tb.Helper()
	c, err := l.Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return addrPort(c.RemoteAddr()), addrPort(c.LocalAddr())
}
