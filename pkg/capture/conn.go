package capture

import (
	"encoding/binary"
	"encoding/hex"
	"hash/fnv"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/vigil-db/vigil/pkg/capture/decode"
	"github.com/vigil-db/vigil/pkg/capture/ebpf"
	"github.com/vigil-db/vigil/pkg/capture/postgres"
	"github.com/vigil-db/vigil/pkg/capture/tcpstream"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/identity"
	"github.com/vigil-db/vigil/pkg/policy"
)

// conn is one database connection as capture sees it: the decoder session and what is
// known about who is on each end. Enrichment that needs /proc happens once, lazily, when
// the first statement is emitted — not per packet.
type conn struct {
	c      *Capturer
	sess   decode.Session
	id     string
	client netip.AddrPort // zero for Unix sockets
	server netip.AddrPort
	path   string // Unix socket path, for server_addr
	proc   *event.Process
	tls    bool
	wire   bool // seen on the network (TCX), not through a server process
	unix   bool // a Unix-socket session, seen through its server process

	backend int32 // server process, when known
	// From the backend's process title, for sessions joined after their startup.
	titleUser, titleDB string
	titleTried         time.Time
	looked             bool // /proc enrichment done
	expected           [2]uint64
	// joined says whether a Unix-socket session's start was seen: decided by its first
	// client bytes, since Unix capture is switched on and off while backends live.
	joined joinState
	// peer is a Unix-socket session's client process as the kernel recorded it at connect;
	// accounted says its connect was settled (see unixAccounted).
	peer      uint32
	accounted bool
	// goneAt is when the server process was seen gone (see sweepProcs).
	goneAt time.Time
	// failed: decoding this connection panicked, and it is no longer decoded (fault.go).
	failed bool
	// The addresses as event strings, formatted once (see addrString): per statement it
	// was an allocation each.
	clientStr, serverStr addrString
}

// addrString caches an address's text; the address of a TLS session can still change
// when its server process reports the socket.
type addrString struct {
	of  netip.AddrPort
	str string
}

func (a *addrString) get(ap netip.AddrPort) string {
	if a.str == "" || a.of != ap {
		a.of, a.str = ap, ap.String()
	}
	return a.str
}

type joinState uint8

const (
	joinUnknown joinState = iota // no client bytes yet
	joinStart                    // the startup message was seen
	joinLate                     // capture joined after the startup
)

// newTCPConn is called by the reassembly table for each new TCP connection.
func (c *Capturer) newTCPConn(client, server netip.AddrPort, ts time.Time) tcpstream.Handler {
	if _, mine := c.ignored.Load(client); mine {
		c.m.ignoredConns.Inc()
		return nil
	}
	k := flowKey{client: client, server: server}
	cn := &conn{c: c, wire: true, client: client, server: server, id: sessionID(c.cfg.Host, client.String(), server.String(), ts)}
	if p, ok := c.pend[k]; ok {
		cn.proc = p.proc
		delete(c.pend, k)
	}
	cn.sess = postgres.NewSession(c.cfg.Decoder, cn.emit)
	c.flows[k] = cn
	c.opened(cn)
	return cn
}

func (c *Capturer) opened(cn *conn) {
	c.live[cn] = struct{}{}
	c.m.sessions.Inc()
}

// close ends the decoder session (recording statements in flight) and folds its counters
// into the totals.
func (cn *conn) close(ts time.Time) {
	cn.guarded(ts, func() { cn.sess.Close(ts) })
	c := cn.c
	if cn.wire {
		if k := (flowKey{client: cn.client, server: cn.server}); c.flows[k] == cn {
			delete(c.flows, k)
		}
	}
	if cn.unix {
		c.unix.closed(uint32(cn.backend))
	}
	if _, ok := c.live[cn]; ok {
		delete(c.live, cn)
		c.closed.Add(cn.sess.Stats())
		c.m.sessions.Dec()
	}
}

// Data implements tcpstream.Handler.
func (cn *conn) Data(fromClient bool, data []byte, ts time.Time) {
	if cn.sess.Encrypted() {
		// TLS: the plaintext comes through the uprobes on the server process.
		cn.tls = true
		return
	}
	cn.guarded(ts, func() { cn.sess.Feed(fromClient, data, ts) })
}

// Gap implements tcpstream.Handler.
func (cn *conn) Gap(fromClient bool, n int, ts time.Time) {
	if cn.sess.Encrypted() {
		return
	}
	cn.c.m.streamGaps.Inc()
	cn.guarded(ts, func() { cn.sess.Gap(fromClient, n, ts) })
}

// Close implements tcpstream.Handler.
func (cn *conn) Close(ts time.Time) { cn.close(ts) }

// sweepProcs closes the TLS and Unix sessions of server processes that have exited: a
// backend serves one connection, so its exit is the connection's end. Not at once: under
// load the ring holds records written before the exit that are not read yet, and closing
// first would split a short session in two, the second part without its start. So a
// session closes once the capture clock (now, the time of the records being read) has
// passed the moment its process was seen gone.
func (c *Capturer) sweepProcs(now time.Time) {
	for k, cn := range c.procs {
		if !cn.goneAt.IsZero() {
			if now.After(cn.goneAt) {
				cn.close(now)
				delete(c.procs, k)
			}
			continue
		}
		if _, err := os.Stat("/proc/" + strconv.Itoa(int(k.pid))); err != nil {
			cn.goneAt = time.Now()
		}
	}
	// A socket whose stream's records never came (lost in the ring).
	for pid, s := range c.tlsSocks {
		if now.Sub(s.at) > time.Minute {
			delete(c.tlsSocks, pid)
		}
	}
}

// tlsSocket notes the TCP connection the kernel named for a server process's new TLS
// stream. The stream's first record follows it in the ring; a session already open for the
// process without addresses (joined mid-stream, its socket unreadable in /proc) takes them
// now.
func (c *Capturer) tlsSocket(k *ebpf.TLSSocket) {
	if cn := c.procs[procKey{pid: k.PID}]; cn != nil && !cn.client.IsValid() {
		cn.onTCP(k.Client, k.Server)
		return
	}
	c.tlsSocks[k.PID] = tlsSock{client: k.Client, server: k.Server, at: ebpf.KtimeToTime(k.Ktime)}
}

// onTCP names the session of a server process serving the TCP connection client → server:
// the wire flow of that connection (encrypted there) knows who connected, from the connect
// event, and names the session; else, on loopback, the client's socket in /proc does.
func (cn *conn) onTCP(client, server netip.AddrPort) {
	c := cn.c
	cn.client, cn.server = client, server
	if tcp := c.flows[flowKey{client: unmap(client), server: unmap(server)}]; tcp != nil {
		cn.proc = tcp.proc
		if cn.id == "" { // a session already named keeps its id
			cn.id = tcp.id
		}
	} else if client.Addr().IsLoopback() {
		if owner, err := identity.TCPOwner(client, server); err == nil {
			cn.proc, _ = c.ident.Lookup(owner)
		}
	}
}

// procData feeds TLS plaintext or Unix-socket data read or written by a server process.
func (c *Capturer) procData(d *ebpf.ProcData, unix bool) {
	ts := ebpf.KtimeToTime(d.Ktime)
	k := procKey{pid: d.PID, unix: unix}
	cn := c.procs[k]
	fromClient := !d.Write
	dir := 0
	if d.Write {
		dir = 1
	}
	if cn != nil && d.Offset < cn.expected[dir] {
		// The stream restarted (a new process with a reused pid, or capture re-enabled).
		cn.close(ts)
		delete(c.procs, k)
		cn = nil
	}
	if cn == nil {
		cn = c.newProcConn(d.PID, d.Peer, unix, ts)
		c.procs[k] = cn
		cn.expected[dir] = d.Offset // joining mid-stream is not a gap: the decoder resyncs
	}
	if unix && fromClient && cn.joined == joinUnknown {
		cn.joined = joinLate
		if d.Offset == 0 && startupFamily(d.Data) {
			cn.joined = joinStart
			// Seen whole from here on: whatever it does is recorded.
			c.unixAccounted(cn)
		} else {
			c.m.lateSessions.Inc()
		}
	}
	if d.Offset > cn.expected[dir] {
		c.m.streamGaps.Inc()
		cn.guarded(ts, func() { cn.sess.Gap(fromClient, int(d.Offset-cn.expected[dir]), ts) })
	}
	cn.expected[dir] = d.Offset + uint64(len(d.Data))
	cn.guarded(ts, func() { cn.sess.Feed(fromClient, d.Data, ts) })
	c.housekeep(ts)
}

// newProcConn starts the session of a server process; peer is the client of a Unix-socket
// session as the kernel reported it (0 if unknown).
func (c *Capturer) newProcConn(pid, peer uint32, unix bool, ts time.Time) *conn {
	cn := &conn{c: c, backend: int32(pid), tls: !unix, unix: unix}
	cfg := c.cfg.Decoder
	cfg.TLS = !unix
	cn.sess = postgres.NewSession(cfg, cn.emit)
	// Addresses, session id and client process come from the backend's socket: as the
	// kernel reported it when the TLS stream started (the backend may have exited since),
	// else as /proc shows it.
	if k, ok := c.tlsSocks[pid]; ok && !unix {
		delete(c.tlsSocks, pid)
		cn.onTCP(k.client, k.server)
	} else if s, err := identity.SocketOf(int(pid)); err == nil {
		switch s.Network {
		case "tcp":
			cn.onTCP(s.Remote, s.Local)
		case "unix":
			cn.path = s.Path
			cn.proc, peer = c.unixClient(int(pid), s, peer)
		}
	} else {
		c.m.identityErrors.Inc()
	}
	if unix {
		cn.peer = peer
		if q := c.unixPend[peer]; cn.proc == nil && len(q) > 0 {
			// The backend is gone already (a short session read late): its client's connect
			// still names the client and the socket.
			cn.proc, cn.path = q[0].proc, q[0].path
		}
		c.unix.opened(pid)
	}
	end := cn.client.String()
	if unix {
		end = "unix:" + cn.path
	}
	if cn.id == "" {
		cn.id = sessionID(c.cfg.Host, end, strconv.Itoa(int(pid)), ts)
	}
	c.opened(cn)
	return cn
}

// unixClient names the client on the other end of a server process's Unix socket, given
// the kernel's peer pid if known: its connect-time credentials first (they survive the
// client's exit), /proc for the rest. It returns the client's pid too, 0 if unknown.
func (c *Capturer) unixClient(server int, s identity.Socket, peer uint32) (*event.Process, uint32) {
	uid := -1
	if peer == 0 {
		pid, u, err := identity.UnixPeerCred(server, s.FD)
		if err != nil {
			if pid, err = identity.UnixPeer(server, s.Inode); err != nil {
				c.m.identityErrors.Inc()
				return nil, 0
			}
			p, _ := c.ident.Lookup(pid)
			return p, uint32(pid)
		}
		peer, uid = uint32(pid), u
	}
	if p, err := c.ident.Lookup(int(peer)); err == nil {
		return p, peer
	}
	// Gone already: what the connect hook saw of it.
	if q := c.unixPend[peer]; len(q) > 0 {
		return q[0].proc, peer
	}
	p := &event.Process{PID: int32(peer)}
	if uid < 0 {
		if _, u, err := identity.UnixPeerCred(server, s.FD); err == nil {
			uid = u
		}
	}
	if uid >= 0 {
		u := int32(uid)
		p.UID = &u
	}
	return p, peer
}

// startupFamily says whether a stream's first client bytes are a startup-family message
// (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest): an untyped length, then a
// protocol version or request code. A typed message never starts with a zero byte, and a
// length under 10000 (the server's own limit for startup packets) keeps it so.
func startupFamily(b []byte) bool {
	if len(b) < 8 {
		return false
	}
	n := binary.BigEndian.Uint32(b)
	code := binary.BigEndian.Uint32(b[4:])
	return n >= 8 && n <= 10000 && (code>>16 == 3 || code == 80877102 || code == 80877103 || code == 80877104)
}

// emit completes a decoded statement with identity and classification and hands it on.
func (cn *conn) emit(e *event.Event) {
	c := cn.c
	if cn.wire {
		// The proxy may announce its upstream connection after the kernel saw it open.
		if _, mine := c.ignored.Load(cn.client); mine {
			return
		}
	}
	e.SessionID = cn.id
	if cn.client.IsValid() {
		e.ClientAddr = cn.clientStr.get(cn.client)
	}
	switch {
	case cn.path != "":
		e.ServerAddr = cn.path
	case cn.server.IsValid():
		e.ServerAddr = cn.serverStr.get(cn.server)
	}
	if cn.tls {
		e.TLS = true
	}
	if e.BackendPID != 0 {
		cn.backend = e.BackendPID
	}
	if e.BackendPID == 0 || e.DBUser == "" || e.Database == "" {
		cn.fromTitle()
		if e.BackendPID == 0 {
			e.BackendPID = cn.backend
		}
		if e.DBUser == "" {
			e.DBUser = cn.titleUser
		}
		if e.Database == "" {
			e.Database = cn.titleDB
		}
	}
	if cn.proc == nil && !cn.looked && cn.client.IsValid() && cn.client.Addr().IsLoopback() {
		cn.lookupClient()
	}
	e.Process = cn.proc
	if cn.unix && !cn.accounted {
		// Joined late, but it is in the trail, with the detail below saying so.
		c.unixAccounted(cn)
	}
	if cn.joined == joinLate {
		e.Detail = joinDetail(e.Detail, "capture joined this Unix-socket session after it started: user and database are from the server's process title, and earlier statements were not seen")
	}
	if e.Type == event.TypeStatement {
		c.classify(e)
	}
	c.m.countStatement(e)
	c.sink.Emit(e)
}

// fromTitle learns the backend pid, user and database of a session whose startup was not
// seen, from the backend's process title. /proc is read once per connection (again after a
// second if the title was not there yet), never per statement.
func (cn *conn) fromTitle() {
	if cn.titleUser != "" || time.Since(cn.titleTried) < time.Second {
		return
	}
	cn.titleTried = time.Now()
	cn.lookupBackend()
	if b, ok := cn.c.servers.backendByPID(cn.backend); ok {
		cn.titleUser, cn.titleDB = b.User, b.Database
	}
}

// lookupBackend finds the server process of a TCP connection opened before the agent saw
// its startup (process titles carry the client's address and port).
func (cn *conn) lookupBackend() {
	if cn.backend != 0 || !cn.client.IsValid() {
		return
	}
	if b, ok := cn.c.servers.backendByClient(cn.client, cn.server); ok {
		cn.backend = int32(b.PID)
	}
}

// lookupClient finds the local client process of a loopback connection whose connect the
// agent did not see (opened before it started). Once per connection: it reads /proc.
func (cn *conn) lookupClient() {
	cn.looked = true
	pid, err := identity.TCPOwner(cn.client, cn.server)
	if err != nil {
		cn.c.m.identityErrors.Inc()
		return
	}
	if p, err := cn.c.ident.Lookup(pid); err == nil {
		cn.proc = p
	}
}

// classify labels a statement with its kind, tables and fingerprint, and with what the
// policy says of it. Capture cannot stop a statement, so a rule that would block it (or
// hold it for approval) is recorded as an alert naming that rule.
func (c *Capturer) classify(e *event.Event) {
	if e.Statement == "" || c.labeler == nil {
		return
	}
	// One Request reused (capture runs on one goroutine; Decide keeps none of it): it was
	// an allocation per statement.
	req := &c.req
	*req = policy.Request{
		Protocol:    e.Protocol,
		SQL:         e.Statement,
		Source:      event.SourceEBPF,
		DBUser:      e.DBUser,
		Database:    e.Database,
		Application: e.Application,
		ClientAddr:  e.ClientAddr,
		ServerAddr:  e.ServerAddr,
		Process:     e.Process,
	}
	d := c.labeler.Decide(req)
	if info := d.Info; info != nil {
		e.Kind = info.Kind
		e.Tables = info.Tables
		e.Fingerprint = info.Fingerprint
		e.NoCredentials = !info.MayCarryCredentials()
	}
	switch d.Action {
	case event.DecisionAllow, "":
		e.Decision = event.DecisionAllow
	default:
		e.Decision = event.DecisionAlert
	}
	e.Rule = d.Rule
}

func joinDetail(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

func unmap(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// sessionID is a stable id for a connection: the same inputs give the same id, and
// different connections (even on a reused port) differ by their start time.
func sessionID(host, a, b string, start time.Time) string {
	h := fnv.New64a()
	h.Write([]byte(host))
	h.Write([]byte{0})
	h.Write([]byte(a))
	h.Write([]byte{0})
	h.Write([]byte(b))
	h.Write([]byte{0})
	var ts [8]byte
	n := start.UnixNano()
	for i := range ts {
		ts[i] = byte(n >> (8 * i))
	}
	h.Write(ts[:])
	return hex.EncodeToString(h.Sum(nil))
}
