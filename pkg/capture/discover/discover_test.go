package discover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/identity"
)

// shared is one server for the tests that only read: a cluster_name with a space in it,
// which every process title of the server carries.
var shared *testpg.Server

func TestMain(m *testing.M) {
	var err error
	if shared, err = testpg.StartServer(testpg.Options{Config: []string{"cluster_name = 'vigil test'"}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	shared.Stop()
	os.Exit(code)
}

func postmasterPID(t *testing.T, s *testpg.Server) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func findServer(t *testing.T, servers []Server, pid int) Server {
	t.Helper()
	for _, s := range servers {
		if s.PID == pid {
			return s
		}
	}
	t.Fatalf("server %d not among %+v", pid, servers)
	return Server{}
}

func TestScanAndBackends(t *testing.T) {
	t.Parallel()
	s := shared
	pm := postmasterPID(t, s)

	servers, err := Scan()
	if err != nil {
		t.Fatal(err)
	}
	srv := findServer(t, servers, pm)
	wantExe := filepath.Join(testpg.BinDir, "postgres")
	if srv.Protocol != event.ProtocolPostgres || srv.Exe != wantExe || srv.DataDir != s.Dir || srv.Version != "15" || srv.Configured {
		t.Errorf("server = %+v", srv)
	}
	if want := "/proc/" + strconv.Itoa(pm) + "/root" + wantExe; srv.ExePath != want {
		t.Errorf("ExePath = %q, want %q", srv.ExePath, want)
	}
	if fi, err := os.Stat(srv.ExePath); err != nil || fi.Size() == 0 {
		t.Errorf("ExePath does not open: %v", err)
	}
	wantListen := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(s.Port))
	if len(srv.Listen) != 1 || srv.Listen[0] != wantListen {
		t.Errorf("Listen = %v, want [%s]", srv.Listen, wantListen)
	}
	if len(srv.UnixSockets) != 1 || srv.UnixSockets[0] != s.SocketPath() {
		t.Errorf("UnixSockets = %v, want [%s]", srv.UnixSockets, s.SocketPath())
	}
	// The backends' processes are not servers themselves.
	for _, o := range servers {
		if st, err := identity.ReadStat(o.PID); err == nil && st.PPID == pm {
			t.Errorf("child %d of the postmaster reported as a server", o.PID)
		}
	}

	ctx := context.Background()
	cfg, err := pgx.ParseConfig(s.DSN("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["application_name"] = "discover-test"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var backendPID int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backendPID); err != nil {
		t.Fatal(err)
	}
	client := conn.PgConn().Conn().LocalAddr().(*net.TCPAddr).AddrPort()

	// A walsender: pg_receivewal holds a physical replication connection.
	walDir := t.TempDir()
	recv := exec.Command(filepath.Join(testpg.BinDir, "pg_receivewal"), "-D", walDir, "-h", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-U", "postgres", "--no-sync")
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { recv.Process.Kill(); recv.Wait() })
	// And a Unix-socket client.
	psql := exec.Command("psql", "-X", "-q", "-h", s.SocketDir, "-p", strconv.Itoa(s.Port), "-U", "postgres", "-d", "template1", "-c", "SELECT pg_sleep(30)")
	if err := psql.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { psql.Process.Kill(); psql.Wait() })

	var bs []Backend
	deadline := time.Now().Add(10 * time.Second)
	for {
		if bs, err = Backends(srv); err != nil {
			t.Fatal(err)
		}
		var repl, local bool
		for _, b := range bs {
			repl = repl || (b.Replication && strings.HasPrefix(b.State, "streaming"))
			local = local || (b.Local && b.State == "SELECT")
		}
		if repl && local {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backends = %+v; want a streaming walsender and a [local] SELECT", bs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	var sawTCP bool
	for _, b := range bs {
		if b.ServerPID != pm {
			t.Errorf("backend %+v: ServerPID != %d", b, pm)
		}
		switch {
		case b.PID == backendPID:
			sawTCP = true
			if b.User != "postgres" || b.Database != "postgres" || b.ClientAddr != client || b.Local || b.Replication || b.State != "idle" {
				t.Errorf("pgx backend = %+v; want postgres/postgres from %s, idle", b, client)
			}
		case b.Replication:
			if b.User != "postgres" || b.Database != "" || !b.ClientAddr.Addr().IsLoopback() {
				t.Errorf("walsender = %+v", b)
			}
		case b.Local:
			if b.User != "postgres" || b.Database != "template1" || b.ClientAddr.IsValid() {
				t.Errorf("psql backend = %+v", b)
			}
			if peer, err := identity.UnixPeer(b.PID, mustSocket(t, b.PID).Inode); err != nil || peer != psql.Process.Pid {
				t.Errorf("UnixPeer(psql backend) = %d, %v; want %d", peer, err, psql.Process.Pid)
			}
		}
	}
	if !sawTCP {
		t.Errorf("pgx backend %d not among %+v", backendPID, bs)
	}

	b, err := BackendByClient(srv, client)
	if err != nil || b.PID != backendPID {
		t.Errorf("BackendByClient(%s) = %+v, %v; want pid %d", client, b, err, backendPID)
	}
	if _, err := BackendByClient(srv, netip.MustParseAddrPort("127.0.0.1:1")); !errors.Is(err, identity.ErrNotFound) {
		t.Errorf("BackendByClient(unknown) error = %v", err)
	}
	b, err = BackendByPID(backendPID)
	if err != nil || b.User != "postgres" || b.Database != "postgres" || b.ClientAddr != client || b.ServerPID != pm {
		t.Errorf("BackendByPID = %+v, %v", b, err)
	}
	if _, err := BackendByPID(pm); !errors.Is(err, ErrNotBackend) {
		t.Errorf("BackendByPID(postmaster) error = %v, want ErrNotBackend", err)
	}
	if _, err := BackendByPID(os.Getpid()); !errors.Is(err, ErrNotBackend) {
		t.Errorf("BackendByPID(test) error = %v, want ErrNotBackend", err)
	}
}

func mustSocket(t *testing.T, pid int) identity.Socket {
	t.Helper()
	so, err := identity.SocketOf(pid)
	if err != nil {
		t.Fatal(err)
	}
	return so
}

// Configuration names servers discovery would not recognize: a PostgreSQL binary reached
// through a symlink under another name, and a port.
func TestScanConfigured(t *testing.T) {
	t.Parallel()
	s := shared
	pm := postmasterPID(t, s)
	link := filepath.Join(t.TempDir(), "pg-server")
	if err := os.Symlink(filepath.Join(testpg.BinDir, "postgres"), link); err != nil {
		t.Fatal(err)
	}
	servers, err := Scan(Config{Name: "by-exe", Exe: link})
	if err != nil {
		t.Fatal(err)
	}
	if srv := findServer(t, servers, pm); srv.Name != "by-exe" || !srv.Configured {
		t.Errorf("server = %+v, want configured by-exe", srv)
	}
	servers, err = Scan(Config{Name: "by-port", Ports: []int{s.Port}})
	if err != nil {
		t.Fatal(err)
	}
	if srv := findServer(t, servers, pm); srv.Name != "by-port" || !srv.Configured {
		t.Errorf("server = %+v, want configured by-port", srv)
	}

	// A port served by a process that is no known server: here, this test's own listener
	// stands in for a server binary under an unknown name.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	servers, err = Scan(Config{Name: "custom", Ports: []int{port}})
	if err != nil {
		t.Fatal(err)
	}
	if srv := findServer(t, servers, os.Getpid()); srv.Name != "custom" || srv.Protocol != event.ProtocolPostgres || len(srv.Listen) != 1 || int(srv.Listen[0].Port()) != port {
		t.Errorf("server = %+v", srv)
	}

	// An entry with ports names the server listening there, not every process running its
	// binary: the PostgreSQL server runs it but listens elsewhere.
	servers, err = Scan(Config{Name: "ports-and-exe", Exe: link, Ports: []int{port}})
	if err != nil {
		t.Fatal(err)
	}
	if srv := findServer(t, servers, pm); srv.Configured {
		t.Errorf("server on another port = %+v, want it not configured", srv)
	}
	if srv := findServer(t, servers, os.Getpid()); srv.Name != "ports-and-exe" || !srv.Configured {
		t.Errorf("server on the port = %+v, want configured ports-and-exe", srv)
	}

	// A configured binary that does not exist is reported, and discovery goes on.
	servers, err = Scan(Config{Name: "missing", Exe: "/nonexistent/postgres"})
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Scan(missing exe) error = %v", err)
	}
	findServer(t, servers, pm)
}

func TestWatcher(t *testing.T) {
	t.Parallel()
	changes := make(chan Change, 64)
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{Interval: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(t.Output(), nil))}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, func(c Change) { changes <- c }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	s, err := testpg.StartServer()
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			s.Stop()
		}
	}()
	pm := postmasterPID(t, s)
	// Other servers (other tests on this host) may come and go too; only pm counts.
	waitChange := func(kind ChangeKind) Server {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case c := <-changes:
				if c.Server.PID == pm && c.Kind == kind {
					return c.Server
				}
			case <-timeout:
				t.Fatalf("no %s change for server %d", kind, pm)
			}
		}
	}
	added := waitChange(Added)
	if added.DataDir != s.Dir {
		t.Errorf("added %+v", added)
	}
	if len(added.Listen) == 0 {
		// Seen while starting: the listeners arrive as an update.
		added = waitChange(Updated)
	}
	if int(added.Listen[0].Port()) != s.Port {
		t.Errorf("added %+v, want port %d", added, s.Port)
	}
	found := false
	for _, srv := range w.Servers() {
		found = found || srv.PID == pm
	}
	if !found {
		t.Errorf("Servers() lacks %d", pm)
	}
	s.Stop()
	stopped = true
	if removed := waitChange(Removed); removed.Key() != added.Key() {
		t.Errorf("removed %+v, added %+v", removed, added)
	}
}
