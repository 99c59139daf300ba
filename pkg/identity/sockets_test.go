package identity

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/vishvananda/netlink"

	"github.com/vigil-db/vigil/internal/testpg"
)

// TestMain lets the test binary act as a helper process in another network namespace
// (started through unshare by TestSocketsInOtherNetns).
func TestMain(m *testing.M) {
	if os.Getenv("VIGIL_IDENTITY_NETNS_HELPER") == "1" {
		if err := netnsHelper(); err != nil {
			fmt.Println("helper:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func addrPort(a net.Addr) netip.AddrPort { return a.(*net.TCPAddr).AddrPort() }

func TestTCPOwner(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	// A connection held by a child shell and, inherited, by its own child (sleep): the
	// owner is the shell, which opened it.
	port := addrPort(l.Addr()).Port()
	cmd := exec.Command("bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d; sleep 30; exit 0", port))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // to end the shell and its sleep together
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	accepted, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()
	waitFor(t, "sleep to start", func() bool { return len(children(cmd.Process.Pid)) > 0 })

	client, server := addrPort(accepted.RemoteAddr()), addrPort(accepted.LocalAddr())
	if pid, err := TCPOwner(client, server); err != nil || pid != cmd.Process.Pid {
		t.Errorf("TCPOwner(client %s→%s) = %d, %v; want bash %d", client, server, pid, err, cmd.Process.Pid)
	}
	if pid, err := TCPOwner(server, client); err != nil || pid != os.Getpid() {
		t.Errorf("TCPOwner(server side) = %d, %v; want %d", pid, err, os.Getpid())
	}
	// No such connection: the kernel would offer the listener on that port; it is refused.
	if _, err := TCPOwner(server, netip.MustParseAddrPort("127.0.0.1:1")); !errors.Is(err, ErrNotFound) {
		t.Errorf("TCPOwner(unknown peer) error = %v, want ErrNotFound", err)
	}
}

// A PostgreSQL backend's client socket, over TCP (pgx) and over the Unix socket (psql).
func TestBackendSockets(t *testing.T) {
	s := testpg.Start(t)
	ctx := context.Background()

	conn, err := pgx.Connect(ctx, s.DSN("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	sock, err := SocketOf(backend)
	if err != nil {
		t.Fatal(err)
	}
	local := addrPort(conn.PgConn().Conn().LocalAddr())
	if sock.Network != "tcp" || int(sock.Local.Port()) != s.Port || sock.Remote != local {
		t.Errorf("SocketOf(TCP backend) = %+v; want tcp :%d ← %s", sock, s.Port, local)
	}
	if pid, err := TCPOwner(local, sock.Local); err != nil || pid != os.Getpid() {
		t.Errorf("TCPOwner(pgx conn) = %d, %v; want %d", pid, err, os.Getpid())
	}

	psql := exec.Command("psql", "-X", "-q", "-h", s.SocketDir, "-p", strconv.Itoa(s.Port), "-U", "postgres", "-d", "postgres", "-c", "SELECT pg_sleep(30)")
	if err := psql.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { psql.Process.Kill(); psql.Wait() })
	var unixBackend int
	waitFor(t, "the psql backend", func() bool {
		out, err := s.Psql("postgres", "SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'")
		unixBackend, _ = strconv.Atoi(out)
		return err == nil && unixBackend != 0
	})
	us, err := SocketOf(unixBackend)
	if err != nil {
		t.Fatal(err)
	}
	if us.Network != "unix" || us.Path != s.SocketPath() || us.PeerInode == 0 {
		t.Errorf("SocketOf(Unix backend) = %+v; want unix %s with a peer", us, s.SocketPath())
	}
	if pid, err := UnixPeer(unixBackend, us.Inode); err != nil || pid != psql.Process.Pid {
		t.Errorf("UnixPeer = %d, %v; want psql %d", pid, err, psql.Process.Pid)
	}

	// The postmaster's listeners: the TCP port and the Unix socket.
	pm := postmasterPID(t, s.Dir)
	ls, err := Listeners(pm)
	if err != nil {
		t.Fatal(err)
	}
	var gotTCP, gotUnix bool
	for _, l := range ls {
		gotTCP = gotTCP || (l.Network == "tcp" && l.Local == netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.Port)))
		gotUnix = gotUnix || (l.Network == "unix" && l.Path == s.SocketPath())
		if !l.Listening {
			t.Errorf("Listeners returned %+v", l)
		}
	}
	if !gotTCP || !gotUnix {
		t.Errorf("postmaster listeners = %+v", ls)
	}
}

// TestSocketsInOtherNetns describes the sockets of a process in its own network namespace, as
// a server in a pod has: invisible to sock_diag from the agent's namespace.
func TestSocketsInOtherNetns(t *testing.T) {
	cmd := exec.Command("unshare", "-n", os.Args[0])
	cmd.Env = append(os.Environ(), "VIGIL_IDENTITY_NETNS_HELPER=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("helper said %q, %v", line, err)
	}
	pid := cmd.Process.Pid // unshare execs the helper
	ls, err := Listeners(pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || ls[0].Local.String() != "127.0.0.1:5999" || ls[1].Path != "@vigil-netns-test" {
		t.Errorf("listeners in the other netns = %+v", ls)
	}
	conns, err := Connections(pid)
	if err != nil {
		t.Fatal(err)
	}
	if len(conns) != 2 || conns[0].Remote != conns[1].Local || conns[1].Remote != conns[0].Local {
		t.Fatalf("connections in the other netns = %+v", conns)
	}
	// The four-tuple does not exist in the agent's namespace; TCPOwner looks in the others.
	if pid2, err := TCPOwner(conns[0].Local, conns[0].Remote); err != nil || pid2 != pid {
		t.Errorf("TCPOwner(connection in another netns) = %d, %v; want %d", pid2, err, pid)
	}
}

// netnsHelper runs in a fresh network namespace: a TCP listener with one connection to
// itself, and an abstract Unix listener.
func netnsHelper() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return err
	}
	l, err := net.Listen("tcp", "127.0.0.1:5999")
	if err != nil {
		return err
	}
	u, err := net.Listen("unix", "@vigil-netns-test")
	if err != nil {
		return err
	}
	defer u.Close()
	c, err := net.Dial("tcp", "127.0.0.1:5999")
	if err != nil {
		return err
	}
	defer c.Close()
	a, err := l.Accept()
	if err != nil {
		return err
	}
	defer a.Close()
	fmt.Println("ready")
	time.Sleep(30 * time.Second)
	return nil
}

func postmasterPID(t *testing.T, dataDir string) int {
	t.Helper()
	b, err := os.ReadFile(dataDir + "/postmaster.pid")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func children(pid int) []int {
	var out []int
	pids, _ := Pids()
	for _, p := range pids {
		if st, err := ReadStat(p); err == nil && st.PPID == pid {
			out = append(out, p)
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// BenchmarkOwners measures the /proc/*/fd scan behind TCPOwner and UnixPeer on this host.
func BenchmarkOwners(b *testing.B) {
	pids, _ := Pids()
	b.ReportMetric(float64(len(pids)), "procs")
	for b.Loop() {
		if _, err := Owners(1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLookup(b *testing.B) {
	b.Run("cached", func(b *testing.B) {
		r := New(Options{})
		for b.Loop() {
			if _, err := r.Lookup(os.Getpid()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("uncached", func(b *testing.B) {
		for b.Loop() {
			if _, err := New(Options{}).Lookup(os.Getpid()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The sock_diag parsers must not panic on short or malformed replies.
func FuzzParseDiagMsg(f *testing.F) {
	f.Add(make([]byte, sizeofInetDiagMsg))
	f.Add(append(make([]byte, sizeofUnixDiagMsg), 8, 0, 2, 0, 1, 2, 3, 4))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseInetDiagMsg(b)
		parseUnixDiagMsg(b)
	})
}
