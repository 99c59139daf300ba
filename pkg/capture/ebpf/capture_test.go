package ebpf

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vishvananda/netlink"
)

// collector is a Handler that keeps copies of everything for the test to inspect.
type collector struct {
	mu    sync.Mutex
	segs  []Segment
	tls   []ProcData
	unix  []ProcData
	conns []ConnEvent
	uconn []UnixConnect
	socks []TLSSocket
}

func (c *collector) Segment(s *Segment) {
	cp := *s
	cp.Payload = bytes.Clone(s.Payload)
	c.mu.Lock()
	c.segs = append(c.segs, cp)
	c.mu.Unlock()
}

func (c *collector) TLS(d *ProcData) {
	cp := *d
	cp.Data = bytes.Clone(d.Data)
	c.mu.Lock()
	c.tls = append(c.tls, cp)
	c.mu.Unlock()
}

func (c *collector) TLSSocket(k *TLSSocket) {
	c.mu.Lock()
	c.socks = append(c.socks, *k)
	c.mu.Unlock()
}

func (c *collector) Unix(d *ProcData) {
	cp := *d
	cp.Data = bytes.Clone(d.Data)
	c.mu.Lock()
	c.unix = append(c.unix, cp)
	c.mu.Unlock()
}

func (c *collector) Connect(e *ConnEvent) {
	c.mu.Lock()
	c.conns = append(c.conns, *e)
	c.mu.Unlock()
}

func (c *collector) UnixConnect(u *UnixConnect) {
	c.mu.Lock()
	c.uconn = append(c.uconn, *u)
	c.mu.Unlock()
}

func (c *collector) Idle() {}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func marker(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "marker-" + hex.EncodeToString(b)
}

// The tests share one PostgreSQL (initdb is most of a test's time); each test looks only for
// its own random markers, so they do not see each other's statements.
var (
	sharedOnce sync.Once
	shared     *testpg.Server
	sharedErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Stop()
	}
	os.Exit(code)
}

func server(t *testing.T) *testpg.Server {
	t.Helper()
	sharedOnce.Do(func() { shared, sharedErr = testpg.StartServer() })
	if sharedErr != nil {
		t.Fatalf("starting PostgreSQL: %v", sharedErr)
	}
	return shared
}

// setup starts (or reuses) PostgreSQL and a tracer watching its port.
func setup(t *testing.T) (*testpg.Server, *Tracer, *collector) {
	t.Helper()
	testenv.RequireBPF(t)
	srv := server(t)
	col := &collector{}
	tr, err := Load(Config{ServerPorts: []uint16{uint16(srv.Port)}}, col, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	for _, h := range tr.Hooks() {
		if h.Name == "tcx/lo/ingress" && !h.Attached {
			t.Fatalf("TCX on lo not attached: %s", h.Err)
		}
	}
	return srv, tr, col
}

func query(t *testing.T, dsn, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatalf("%.60s: %v", sql, err)
	}
}

// stream concatenates the payload sent from src, ordered by sequence number relative to
// the SYN, and says whether it has holes.
func stream(segs []Segment, src netip.AddrPort) (data []byte, holes bool) {
	var isn uint32
	var mine []Segment
	for _, s := range segs {
		if s.Src != src {
			continue
		}
		if s.SYN {
			isn = s.Seq
		}
		mine = append(mine, s)
	}
	sort.SliceStable(mine, func(i, j int) bool { return mine[i].Seq-isn < mine[j].Seq-isn })
	next := isn + 1
	for _, s := range mine {
		if len(s.Payload) == 0 {
			continue
		}
		rel := int64(s.Seq - next) // retransmits overlap; gaps are holes
		switch {
		case s.Seq-isn < next-isn:
			over := int(next - s.Seq)
			if over < len(s.Payload) {
				data = append(data, s.Payload[over:]...)
				next += uint32(len(s.Payload) - over)
			}
		case rel == 0:
			data = append(data, s.Payload...)
			next += uint32(len(s.Payload))
		default:
			holes = true
			data = append(data, s.Payload...)
			next = s.Seq + uint32(len(s.Payload))
		}
	}
	return data, holes
}

// contiguous checks that the stream holding marker m starts at offset 0 and has no holes.
func contiguous(t *testing.T, records []ProcData, m string) {
	t.Helper()
	for _, write := range []bool{false, true} {
		var key *ProcData
		for i, d := range records {
			if d.Write == write && bytes.Contains(d.Data, []byte(m)) {
				key = &records[i]
			}
		}
		if key == nil {
			t.Fatalf("no record with the marker (write=%v)", write)
		}
		if key.FD < 0 {
			t.Errorf("record without its fd: %+v", *key)
		}
		var next uint64
		for _, d := range records {
			if d.PID != key.PID || d.FD != key.FD || d.Write != write {
				continue
			}
			if d.Offset != next {
				t.Fatalf("stream pid %d fd %d write=%v: record at offset %d, want %d", d.PID, d.FD, write, d.Offset, next)
			}
			next += uint64(len(d.Data))
		}
	}
}

func TestPlaintextTCP(t *testing.T) {
	srv, tr, col := setup(t)
	m := marker(t)
	query(t, srv.DSN("postgres", "postgres"), "SELECT '"+m+"'")

	port := uint16(srv.Port)
	var client netip.AddrPort
	waitFor(t, "the marker in both directions", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		var toServer, toClient bool
		for _, s := range col.segs {
			if !bytes.Contains(s.Payload, []byte(m)) {
				continue
			}
			if s.Dst.Port() == port {
				toServer, client = true, s.Src
			}
			if s.Src.Port() == port {
				toClient = true
			}
		}
		return toServer && toClient
	})
	waitFor(t, "the connection event of this process", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		for _, c := range col.conns {
			if !c.Closed && c.Src == client && c.Dst.Port() == port {
				if c.TGID != uint32(os.Getpid()) || c.UID != uint32(os.Getuid()) || c.Comm == "" || c.CgroupID == 0 {
					t.Errorf("connection event %+v: want tgid %d uid %d, a comm and a cgroup", c, os.Getpid(), os.Getuid())
				}
				return true
			}
		}
		return false
	})
	waitFor(t, "SYN and FIN of the flow, and its close", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		var syn, fin, closed bool
		for _, s := range col.segs {
			if s.Src == client {
				syn = syn || s.SYN
				fin = fin || s.FIN
			}
		}
		for _, c := range col.conns {
			closed = closed || (c.Closed && c.Src == client)
		}
		return syn && fin && closed
	})
	st := tr.Stats()
	if st.TCX.Records == 0 || st.TCX.Bytes == 0 || st.Conn.Records == 0 {
		t.Errorf("stats do not count what was delivered: %+v", st)
	}
	if st.TCX.LostRecords != 0 || st.Malformed != 0 {
		t.Errorf("lost or malformed records: %+v", st)
	}
}

func TestLargeQueryArrivesWhole(t *testing.T) {
	srv, tr, col := setup(t)
	m := marker(t)
	big := "SELECT '" + m + strings.Repeat("x", 300<<10) + "'"
	query(t, srv.DSN("postgres", "postgres"), big)

	port := uint16(srv.Port)
	waitFor(t, "the whole 300 KB statement", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		var client netip.AddrPort
		for _, s := range col.segs {
			if s.Dst.Port() == port && bytes.Contains(s.Payload, []byte(m)) {
				client = s.Src
			}
		}
		if !client.IsValid() {
			return false
		}
		data, holes := stream(col.segs, client)
		return !holes && bytes.Contains(data, []byte(big))
	})
	if st := tr.Stats(); st.TCX.LostRecords != 0 {
		t.Errorf("lost records: %+v", st.TCX)
	}
}

func TestTLS(t *testing.T) {
	srv, tr, col := setup(t)
	if err := tr.AttachPostgresTLS(filepath.Join(testpg.BinDir, "postgres")); err != nil {
		t.Fatalf("AttachPostgresTLS: %v", err)
	}
	dsn := strings.Replace(srv.DSN("postgres", "postgres"), "sslmode=disable", "sslmode=require", 1)
	// Before the server is watched its TLS sessions are not recorded, though the uprobes on
	// its binary fire: they are some other server's as far as the hooks know.
	unwatched := marker(t) + "_unwatched"
	query(t, dsn, "SELECT '"+unwatched+"'")
	if err := tr.WatchProcess(postmasterPID(t, srv)); err != nil {
		t.Fatalf("WatchProcess: %v", err)
	}
	m := marker(t)
	query(t, dsn, "SELECT '"+m+"'")

	waitFor(t, "the marker in TLS plaintext, read and written", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		var read, written bool
		for _, d := range col.tls {
			if bytes.Contains(d.Data, []byte(m)) {
				read = read || !d.Write
				written = written || d.Write
			}
		}
		return read && written
	})
	col.mu.Lock()
	defer col.mu.Unlock()
	for _, s := range col.segs {
		if bytes.Contains(s.Payload, []byte(m)) {
			t.Fatalf("marker of a TLS connection seen in plaintext segment %v → %v", s.Src, s.Dst)
		}
	}
	for _, d := range col.tls {
		if bytes.Contains(d.Data, []byte(unwatched)) {
			t.Fatalf("TLS plaintext of an unwatched server recorded (process %d)", d.PID)
		}
	}
	contiguous(t, col.tls, m)

	// The backend's TCP connection was named once, before its stream's first record.
	var backend uint32
	for _, d := range col.tls {
		if bytes.Contains(d.Data, []byte(m)) {
			backend = d.PID
		}
	}
	var socks []TLSSocket
	for _, k := range col.socks {
		if k.PID == backend {
			socks = append(socks, k)
		}
	}
	if len(socks) != 1 || socks[0].Server.Port() != uint16(srv.Port) || !socks[0].Client.Addr().IsLoopback() ||
		socks[0].Client.Port() == 0 || socks[0].Client.Port() == socks[0].Server.Port() {
		t.Errorf("TLS socket records of backend %d: %+v, want one naming the client → 127.0.0.1:%d", backend, socks, srv.Port)
	}
}

func TestTLSMissingSymbol(t *testing.T) {
	testenv.RequireBPF(t)
	tr, err := Load(Config{}, &collector{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer tr.Close()
	bin, err := exec.LookPath("psql") // a real ELF without be_tls_read
	if err != nil {
		t.Fatal(err)
	}
	bin, _ = filepath.EvalSymlinks(bin)
	if err := tr.AttachPostgresTLS(bin); err == nil {
		t.Fatal("attaching to a binary without be_tls_read succeeded")
	}
	var listed bool
	for _, h := range tr.Hooks() {
		if strings.Contains(h.Name, bin) {
			listed = true
			if h.Attached || h.Err == "" {
				t.Errorf("hook %+v: want detached with an error", h)
			}
		}
	}
	if !listed {
		t.Error("the failed binary is not listed in Hooks")
	}
}

func postmasterPID(t *testing.T, srv *testpg.Server) uint32 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(srv.Dir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.ParseUint(strings.TrimSpace(line), 10, 32)
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	return uint32(pid)
}

func TestUnixSocket(t *testing.T) {
	srv, tr, col := setup(t)
	if err := tr.WatchProcess(postmasterPID(t, srv)); err != nil {
		t.Fatalf("WatchProcess: %v", err)
	}
	if err := tr.EnableUnix(true); err != nil {
		t.Fatalf("EnableUnix(true): %v", err)
	}
	m := marker(t)
	if _, err := srv.Psql("postgres", "SELECT '"+m+"'"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the marker in Unix data, read and written", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		var read, written bool
		for _, d := range col.unix {
			if bytes.Contains(d.Data, []byte(m)) {
				read = read || !d.Write
				written = written || d.Write
			}
		}
		return read && written
	})
	col.mu.Lock()
	contiguous(t, col.unix, m)
	for _, d := range col.unix {
		// Every record names the client: psql, which is neither the backend nor us.
		if d.Peer == 0 || d.Peer == d.PID || d.Peer == uint32(os.Getpid()) {
			t.Errorf("Unix record of backend %d names client %d", d.PID, d.Peer)
			break
		}
	}
	col.mu.Unlock()

	if err := tr.EnableUnix(false); err != nil {
		t.Fatalf("EnableUnix(false): %v", err)
	}
	tr.detaching.Wait() // links close in the background, and may deliver until closed
	col.mu.Lock()
	before := len(col.unix)
	col.mu.Unlock()
	m2 := marker(t)
	if _, err := srv.Psql("postgres", "SELECT '"+m2+"'"); err != nil {
		t.Fatal(err)
	}
	// A TCP statement after it, once seen, proves the ring was read past the Unix one.
	m3 := marker(t)
	query(t, srv.DSN("postgres", "postgres"), "SELECT '"+m3+"'")
	waitFor(t, "the TCP statement after the Unix one", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		for _, s := range col.segs {
			if bytes.Contains(s.Payload, []byte(m3)) {
				return true
			}
		}
		return false
	})
	col.mu.Lock()
	defer col.mu.Unlock()
	if n := len(col.unix) - before; n != 0 {
		t.Errorf("%d Unix records after EnableUnix(false)", n)
	}
	for _, h := range tr.Hooks() {
		if strings.HasPrefix(h.Name, "tracepoint/syscalls/") && h.Attached {
			t.Errorf("%s still attached", h.Name)
		}
	}
}

// TestUnixConnectTrigger: a connect() to a PostgreSQL socket is reported with its client and
// path, other Unix connects are not, and no connect is ever refused. Also measures how long
// switching Unix capture on takes, since that is what races the new backend's first read.
func TestUnixConnectTrigger(t *testing.T) {
	srv, tr, col := setup(t)
	if err := tr.UnixConnectHook(); err != nil {
		t.Fatalf("connect_unix hook: %v; hooks %+v", err, tr.Hooks())
	}
	if _, err := srv.Psql("postgres", "SELECT 1"); err != nil { // psql over the socket directory
		t.Fatal(err)
	}
	want := filepath.Join(srv.SocketDir, ".s.PGSQL."+strconv.Itoa(srv.Port))
	waitFor(t, "a Unix connect record for psql", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		for _, u := range col.uconn {
			if u.Path == want && u.Port == uint16(srv.Port) && u.Comm == "psql" && u.TGID != 0 && u.PID != 0 && u.CgroupID != 0 {
				return true
			}
		}
		return false
	})

	// A socket named like PostgreSQL's but served by us: reported (the port is userspace's
	// to check), and the connection goes through. Another name: not reported.
	dir := t.TempDir()
	for _, name := range []string{".s.PGSQL.7", "other.sock", ".s.PGSQL.x"} {
		l, err := net.Listen("unix", filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial("unix", filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("connect to %s refused with the hook attached: %v", name, err)
		}
		c.Close()
		l.Close()
	}
	// The PostgreSQL record comes last, so once it is seen, the others would have been too.
	waitFor(t, "the record for .s.PGSQL.7", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		for _, u := range col.uconn {
			if u.Port == 7 && u.Path == filepath.Join(dir, ".s.PGSQL.7") && u.TGID == uint32(os.Getpid()) {
				return true
			}
		}
		return false
	})
	col.mu.Lock()
	for _, u := range col.uconn {
		if strings.HasPrefix(u.Path, dir) && u.Port != 7 {
			t.Errorf("record for a socket that is not PostgreSQL's: %+v", u)
		}
	}
	col.mu.Unlock()

	var on, off []time.Duration
	for range 5 {
		start := time.Now()
		if err := tr.EnableUnix(true); err != nil {
			t.Fatal(err)
		}
		on = append(on, time.Since(start))
		start = time.Now()
		if err := tr.EnableUnix(false); err != nil {
			t.Fatal(err)
		}
		off = append(off, time.Since(start))
	}
	t.Logf("EnableUnix(true) took %v; EnableUnix(false) %v", on, off)
}

// TestLossIsCounted fills a one-page ring that nobody reads: what does not fit must show up
// in the loss counters, and once the ring is read again, the sequence numbers of the
// connection's stream must show the hole where the lost bytes were.
func TestLossIsCounted(t *testing.T) {
	testenv.RequireBPF(t)
	srv := server(t)
	col := &collector{}
	tr, err := Load(Config{ServerPorts: []uint16{uint16(srv.Port)}, RingBytes: os.Getpagesize()}, col, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv.DSN("postgres", "postgres"))
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	defer conn.Close(ctx)
	big := "SELECT '" + strings.Repeat("x", 100<<10) + "'"
	if _, err := conn.Exec(ctx, big); err != nil {
		t.Fatal(err)
	}
	st := tr.Stats()
	if st.TCX.LostRecords == 0 || st.TCX.LostBytes < 90<<10 {
		t.Fatalf("a 100 KB statement through a 4 KB ring that is not read lost %d records, %d bytes; want the loss counted", st.TCX.LostRecords, st.TCX.LostBytes)
	}

	// Read the ring again, and send a statement after the hole on the same connection.
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tr.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	m := marker(t)
	if _, err := conn.Exec(ctx, "SELECT '"+m+"'"); err != nil {
		t.Fatal(err)
	}
	port := uint16(srv.Port)
	var client netip.AddrPort
	waitFor(t, "the statement after the hole", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		for _, s := range col.segs {
			if s.Dst.Port() == port && bytes.Contains(s.Payload, []byte(m)) {
				client = s.Src
				return true
			}
		}
		return false
	})
	col.mu.Lock()
	data, holes := stream(col.segs, client)
	col.mu.Unlock()
	if !holes {
		t.Fatalf("the client's stream (%d bytes captured of %d sent) shows no hole", len(data), len(big))
	}
	if !bytes.Contains(data, []byte(m)) || bytes.Count(data, []byte("x")) >= len(big)-16 {
		t.Errorf("the stream around the hole: %d bytes, has the marker: %v, x's: %d", len(data), bytes.Contains(data, []byte(m)), bytes.Count(data, []byte("x")))
	}
}

// TestNewInterfaceIsAttached creates an interface (ifb: the ifc driver is not built on every
// kernel) after Load: capture must follow it
// there, and forget it when it goes away.
func TestNewInterfaceIsAttached(t *testing.T) {
	testenv.RequireBPF(t)
	tr, err := Load(Config{}, &collector{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer tr.Close()
	name := "vgtest" + marker(t)[7:13]
	ifc := &netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(ifc); err != nil {
		t.Fatalf("creating interface %s: %v", name, err)
	}
	deleted := false
	defer func() {
		if !deleted {
			_ = netlink.LinkDel(ifc)
		}
	}()
	hookState := func() (ingress, egress bool) {
		for _, h := range tr.Hooks() {
			switch h.Name {
			case "tcx/" + name + "/ingress":
				ingress = h.Attached
			case "tcx/" + name + "/egress":
				egress = h.Attached
			}
		}
		return
	}
	waitFor(t, "TCX on the new interface", func() bool {
		in, eg := hookState()
		return in && eg
	})
	if err := netlink.LinkDel(ifc); err != nil {
		t.Fatalf("deleting %s: %v", name, err)
	}
	deleted = true
	waitFor(t, "the deleted interface to leave Hooks", func() bool {
		in, eg := hookState()
		return !in && !eg
	})
}
