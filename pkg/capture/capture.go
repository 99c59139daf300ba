// Package capture turns what the kernel hooks see into statement events: per-connection
// stream reassembly, protocol decoding, identity enrichment and classification. It knows
// nothing of where events go; the agent hands it an event.Sink.
package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/pkg/capture/decode"
	"github.com/vigil-db/vigil/pkg/capture/ebpf"
	"github.com/vigil-db/vigil/pkg/capture/postgres"
	"github.com/vigil-db/vigil/pkg/capture/tcpstream"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/identity"
	"github.com/vigil-db/vigil/pkg/policy"
)

// Config configures capture.
type Config struct {
	// Host names this machine in session ids.
	Host string
	// Identity configures how client processes are looked up (their Logger is replaced
	// with capture's).
	Identity identity.Options
	// Decoder configures the PostgreSQL decoder (statement cap, bind parameters).
	Decoder postgres.Config
	// TLS attaches uprobes to each server binary to see TLS connections in plaintext.
	TLS bool
	// Unix captures Unix-socket connections (syscall tracepoints; a host-wide cost). By
	// default the tracepoints are attached only while Unix-socket sessions exist: from a
	// client's connect() to a watched server's socket until UnixQuiet after the last such
	// session ended.
	Unix bool
	// UnixAlwaysOn keeps the Unix tracepoints attached whenever a server is watched (the
	// behaviour on kernels without the cgroup connect_unix hook, before 6.7).
	UnixAlwaysOn bool
	// UnixQuiet is how long on-demand Unix capture stays on after its last session ended.
	// Default 30s.
	UnixQuiet time.Duration
	// Discover finds PostgreSQL servers by their executables; Interval is how often.
	Discover bool
	Interval time.Duration
	// Servers are named explicitly, in addition to discovered ones; without Discover they
	// are the only servers captured.
	Servers []StaticServer
	// RingBytes sizes the kernel ring buffer.
	RingBytes int
	// PinDir, when set, pins the kernel side in bpffs so that it keeps capturing across a
	// restart of the agent, and adopts what an earlier agent left there (ebpf.Config.PinDir).
	PinDir string
	// StalePinDir, with PinDir empty, is where an earlier agent with pinning on would have
	// pinned capture: whatever is there is removed unread at start (its hooks would
	// otherwise run on with nobody reading), and the gap event says so.
	StalePinDir string
	// StateFile records when capture last ran and whether it stopped cleanly, so that the
	// next start can record the window no agent captured as a gap event. Empty: none.
	StateFile string
}

// StaticServer is a server named in the configuration: the process listening on one of
// Ports.
type StaticServer struct {
	Ports []uint16
	// Binary is the server's executable, recognized as a server binary; optional.
	Binary string
}

// Labeler is the policy as capture uses it: to label statements (capture cannot block).
type Labeler interface {
	Decide(req *policy.Request) policy.Decision
}

// Capturer runs the kernel hooks and turns what they see into events.
type Capturer struct {
	cfg     Config
	sink    event.Sink
	labeler Labeler
	req     policy.Request // classify's, reused
	log     *slog.Logger
	ident   *identity.Resolver
	m       *metrics

	tracer *ebpf.Tracer
	table  *tcpstream.Table
	procs  map[procKey]*conn // TLS and Unix streams, by server process
	// tlsSocks are the TCP connections the kernel named for server processes' new TLS
	// streams, until the stream's first record (next in the ring) opens its session.
	tlsSocks map[uint32]tlsSock
	live     map[*conn]struct{} // every open session, for the decoder metrics
	flows    map[flowKey]*conn  // TCP connections by their ends
	closed   decode.Stats       // decoder counters of sessions already closed
	pend     map[flowKey]pending
	unix     *unixGate
	// unixPend are clients' connects to a watched server's Unix socket, by client process,
	// oldest first, until capture sees their sessions: a client that exits before its
	// backend's first record is read is still named, and a session capture never sees is
	// reported (see unixmiss.go).
	unixPend      map[uint32][]unixConnect
	unixPendN     int
	lastUnixSweep time.Time

	// ports are the watched server ports; read on the capture goroutine, replaced by
	// discovery.
	ports atomic.Pointer[map[uint16]bool]
	// ignored are local addresses of connections Vigil itself opened (the proxy's upstream
	// connections), which the proxy already records.
	ignored sync.Map // netip.AddrPort → time.Time: zero while open, else when to forget it

	servers *serverSet
	ready   atomic.Bool
	lost    uint64 // kernel losses already reported as gap events
}

// procKey names a TLS or Unix stream: one server process (a PostgreSQL backend serves one
// connection) and the path the bytes came through.
type procKey struct {
	pid  uint32
	unix bool
}

// tlsSock is a TCP connection under a TLS stream, as the kernel reported it.
type tlsSock struct {
	client, server netip.AddrPort
	at             time.Time
}

// flowKey names a TCP connection by its client and server ends.
type flowKey struct{ client, server netip.AddrPort }

// pending is a connect seen before its first packet: who opened it.
type pending struct {
	proc *event.Process
	at   time.Time
}

// New prepares capture; Run loads the programs and runs until ctx ends.
func New(cfg Config, sink event.Sink, labeler Labeler, log *slog.Logger, reg prometheus.Registerer) (*Capturer, error) {
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	c := &Capturer{
		cfg:      cfg,
		sink:     sink,
		labeler:  labeler,
		log:      log,
		ident:    identity.New(withLogger(cfg.Identity, log)),
		procs:    map[procKey]*conn{},
		tlsSocks: map[uint32]tlsSock{},
		live:     map[*conn]struct{}{},
		flows:    map[flowKey]*conn{},
		pend:     map[flowKey]pending{},

		unixPend: map[uint32][]unixConnect{},
	}
	empty := map[uint16]bool{}
	c.ports.Store(&empty)
	c.servers = newServerSet(c)
	c.unix = newUnixGate(c)
	c.table = tcpstream.NewTable(tcpstream.TableConfig{IsServer: c.isServer}, c.newTCPConn)
	m, err := newMetrics(c, reg)
	if err != nil {
		return nil, err
	}
	c.m = m
	return c, nil
}

// Ignore tells capture that connections from local are Vigil's own (the proxy's upstream
// side): the proxy records their statements, so capture must not record them twice.
func (c *Capturer) Ignore(local netip.AddrPort) { c.ignored.Store(local, time.Time{}) }

// Unignore says the connection from local has closed. Capture reads the kernel's records a
// little after the fact, so the address stays ignored for a grace period: the last
// statements of a short session must not slip through as the connection's own.
func (c *Capturer) Unignore(local netip.AddrPort) {
	c.ignored.Store(local, time.Now().Add(ignoreGrace))
}

// ignoreGrace outlasts the ring buffer's delivery delay and the reassembly's hole timeout.
const ignoreGrace = 10 * time.Second

// purgeIgnored drops addresses whose grace period has passed.
func (c *Capturer) purgeIgnored(now time.Time) {
	c.ignored.Range(func(k, v any) bool {
		if until := v.(time.Time); !until.IsZero() && now.After(until) {
			c.ignored.Delete(k)
		}
		return true
	})
}

// Ready reports whether the kernel hooks are attached and the reader runs.
func (c *Capturer) Ready() bool { return c.ready.Load() }

// Hooks lists the kernel hooks and whether each attached.
func (c *Capturer) Hooks() []ebpf.HookStatus {
	if c.tracer == nil {
		return nil
	}
	return c.tracer.Hooks()
}

// Run loads and attaches the kernel programs, finds the servers, and captures until ctx
// ends. Optional hooks that fail are logged and listed by Hooks; only a failure to load the
// programs at all is an error.
func (c *Capturer) Run(ctx context.Context) error {
	var prev *restartState
	if c.cfg.StateFile != "" {
		var err error
		if prev, err = readRestartState(c.cfg.StateFile); err != nil {
			c.log.Error("the previous agent's capture state is unreadable: a window it did not capture cannot be recorded", "err", err)
		}
	}
	discarded := c.removeStalePins()
	tr, err := ebpf.Load(ebpf.Config{RingBytes: c.cfg.RingBytes, PinDir: c.cfg.PinDir}, handler{c}, c.log)
	if err != nil {
		return fmt.Errorf("loading capture programs: %w", err)
	}
	c.tracer = tr
	defer func() {
		if err := tr.Close(); err != nil {
			c.log.Error("closing capture", "err", err)
		}
		c.beat(time.Now(), false)
	}()
	defer c.ident.Close()
	for _, h := range tr.Hooks() {
		if h.Attached {
			c.log.Info("hook attached", "hook", h.Name)
		} else if h.Err != "" {
			c.log.Warn("hook not attached: capture degraded", "hook", h.Name, "error", h.Err)
		}
	}
	c.unix.setup()
	if err := c.servers.refresh(); err != nil {
		c.log.Warn("finding database servers", "error", err)
	}
	// Only now are the servers' ports watched: a window without capture ends here.
	a := tr.Adoption()
	if discarded != "" {
		a.Discarded = discarded
	}
	c.startRestart(prev, a, time.Now())
	c.ready.Store(true)

	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		c.heartbeats(ctx)
	}()
	go func() {
		defer wg.Done()
		c.servers.watch(ctx, c.cfg.Interval)
	}()
	go func() {
		defer wg.Done()
		c.unix.run(ctx)
	}()
	err = tr.Run(ctx)
	wg.Wait()
	c.flushAll()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("capture: %w", err)
	}
	return nil
}

// isServer says whether addr is a watched database server port. Ports, not addresses:
// the kernel filter is by port too, and a server listening on 0.0.0.0 answers on every
// address of the host.
func (c *Capturer) isServer(addr netip.AddrPort) bool {
	return (*c.ports.Load())[addr.Port()]
}

// handler adapts the Capturer to the tracer's callbacks, all on the tracer's goroutine.
type handler struct{ c *Capturer }

func (h handler) Segment(s *ebpf.Segment) {
	c := h.c
	var flags tcpstream.Flags
	if s.SYN {
		flags |= tcpstream.SYN
	}
	if s.FIN {
		flags |= tcpstream.FIN
	}
	if s.RST {
		flags |= tcpstream.RST
	}
	ts := ebpf.KtimeToTime(s.Ktime)
	c.table.Add(tcpstream.Segment{Src: s.Src, Dst: s.Dst, Seq: s.Seq, Flags: flags, Payload: s.Payload, Time: ts})
	c.housekeep(ts)
}

func (h handler) TLS(d *ebpf.ProcData)        { h.c.procData(d, false) }
func (h handler) TLSSocket(k *ebpf.TLSSocket) { h.c.tlsSocket(k) }
func (h handler) Unix(d *ebpf.ProcData)       { h.c.procData(d, true) }

// Idle reports Unix-socket sessions missed on time when no records come to drive housekeep.
func (h handler) Idle() { h.c.sweepUnixConnects(time.Now()) }

func (h handler) Connect(ev *ebpf.ConnEvent) {
	c := h.c
	ts := ebpf.KtimeToTime(ev.Ktime)
	k := flowKey{client: ev.Src, server: ev.Dst}
	if ev.Closed {
		delete(c.pend, k)
		return
	}
	if _, mine := c.ignored.Load(ev.Src); mine {
		return
	}
	p, err := c.ident.Lookup(int(ev.TGID))
	if err != nil {
		// The process may already be gone; the kernel's view is still worth keeping: its
		// cgroup at connect names the workload (container, pod) even so.
		uid := int32(ev.UID)
		p = &event.Process{PID: int32(ev.TGID), UID: &uid, Comm: ev.Comm}
		if cp, err := c.ident.CgroupIdentity(ev.CgroupID); err == nil {
			p.Cgroup, p.ContainerID, p.Pod, p.Namespace, p.ServiceAccount = cp.Cgroup, cp.ContainerID, cp.Pod, cp.Namespace, cp.ServiceAccount
		}
		c.m.identityErrors.Inc()
	}
	// The kernel reports the connect once it is established, by when the SYN has usually
	// opened the flow already.
	if cn := c.flows[k]; cn != nil {
		if cn.proc == nil {
			cn.proc = p
		}
		return
	}
	if len(c.pend) > maxPending {
		c.expirePending(ts)
	}
	c.pend[k] = pending{proc: p, at: ts}
}

// UnixConnect switches Unix capture on when the socket is a watched server's, and notes who
// connected. Only what the kernel reported: reading /proc here would delay the records
// behind this one, the new backend's first, whose socket must be looked up before a short
// session's backend exits.
func (h handler) UnixConnect(u *ebpf.UnixConnect) {
	c := h.c
	if !c.servers.unixPort(u.Port) {
		return
	}
	c.unix.connect()
	if !c.cfg.Unix {
		return
	}
	uid := int32(u.UID)
	p := &event.Process{PID: int32(u.TGID), UID: &uid, Comm: u.Comm}
	c.awaitUnixSession(u.TGID, unixConnect{proc: p, path: u.Path, at: ebpf.KtimeToTime(u.Ktime)})
}

// maxPending bounds connects waiting for their first packet.
const maxPending = 4096

func (c *Capturer) expirePending(now time.Time) {
	for k, p := range c.pend {
		if now.Sub(p.at) > 30*time.Second {
			delete(c.pend, k)
		}
	}
}

// housekeep runs periodic work from the capture goroutine, driven by the capture clock.
func (c *Capturer) housekeep(now time.Time) {
	if now.Sub(c.m.lastHousekeep) < 250*time.Millisecond {
		return
	}
	c.m.lastHousekeep = now
	c.table.Expire(now)
	dec := c.closed
	for cn := range c.live {
		dec.Add(cn.sess.Stats())
	}
	c.m.mu.Lock()
	c.m.table = c.table.Stats()
	c.m.decoder = dec
	c.m.mu.Unlock()
	c.reportKernelLoss(now)
	c.sweepUnixConnects(now)
	if now.Sub(c.m.lastSweep) > 5*time.Second {
		c.m.lastSweep = now
		c.sweepProcs(now)
		c.purgeIgnored(time.Now())
	}
}

// reportKernelLoss writes a gap event when the kernel could not deliver records: the trail
// must say it is incomplete, and where.
func (c *Capturer) reportKernelLoss(now time.Time) {
	c.reportKernelLossDetail(now, "ring buffer full or data unreadable")
}

func (c *Capturer) reportKernelLossDetail(now time.Time, why string) {
	if c.tracer == nil { // fed without the kernel (BenchmarkPipeline)
		return
	}
	st := c.tracer.Stats()
	lost := st.TCX.LostRecords + st.TLS.LostRecords + st.Unix.LostRecords + st.Conn.LostRecords + st.UnixConnect.LostRecords
	if lost <= c.lost {
		return
	}
	n := lost - c.lost
	c.lost = lost
	c.sink.Emit(&event.Event{
		Time:   now,
		Type:   event.TypeGap,
		Source: event.SourceEBPF,
		Lost:   n,
		Detail: fmt.Sprintf("kernel could not deliver %d capture records (%s): statements in that window may be missing or incomplete", n, why),
	})
	// A successor adopting the pins must not report these again.
	if err := c.tracer.CommitLoss(st); err != nil {
		c.log.Error("kernel losses reported but not marked: an agent adopting the pins reports them again", "err", err)
	}
}

// flushAll closes every open session so statements in flight are recorded.
func (c *Capturer) flushAll() {
	now := time.Now()
	c.reportKernelLoss(now)
	c.table.CloseAll(now)
	for k, cn := range c.procs {
		cn.close(now)
		delete(c.procs, k)
	}
}

func withLogger(o identity.Options, log *slog.Logger) identity.Options {
	o.Logger = log
	return o
}
