package capture

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigil-db/vigil/pkg/capture/discover"
)

// defaultUnixQuiet is how long Unix capture stays on after its last session ended: long
// enough that a client reconnecting in a loop does not flap the tracepoints (detaching
// takes ~0.1 s), short enough that the host does not pay for long.
const defaultUnixQuiet = 30 * time.Second

// unixGate decides when the Unix-socket syscall tracepoints are attached. They slow every
// syscall on the host, so in on-demand mode they are attached only from a local client's
// connect() to a watched server's socket (the kernel's connect_unix hook, which fires before
// the server accepts) until the last Unix-socket session has ended and a quiet period passed.
// Without that hook (kernel < 6.7, no cgroup v2) or with Config.UnixAlwaysOn, they stay
// attached while a server is watched.
type unixGate struct {
	c        *Capturer
	onDemand bool
	quiet    time.Duration

	mu   sync.Mutex
	on   bool
	busy time.Time // last connect, or last time a Unix-socket session was seen alive
	// sessions are the backends of Unix-socket sessions capture decodes; kept by the
	// capture goroutine, read by the ticker.
	sessions map[uint32]struct{}
	lost     uint64 // connect records the kernel lost, already acted on
}

func newUnixGate(c *Capturer) *unixGate {
	q := c.cfg.UnixQuiet
	if q <= 0 {
		q = defaultUnixQuiet
	}
	return &unixGate{c: c, quiet: q, sessions: map[uint32]struct{}{}}
}

// setup picks the mode once the tracer is loaded.
func (g *unixGate) setup() {
	c := g.c
	if !c.cfg.Unix || c.cfg.UnixAlwaysOn {
		return
	}
	if err := c.tracer.UnixConnectHook(); err != nil {
		c.log.Warn("Unix-socket capture cannot start on demand: its syscall tracepoints stay attached while a server is watched, slowing every syscall on the host", "error", err)
		return
	}
	g.onDemand = true
	c.log.Info("Unix-socket capture on demand: syscall tracepoints attach when a client connects to a server's socket", "quiet", g.quiet)
}

// serverAdded switches Unix capture on for a newly watched server: always in the fallback
// mode, and in on-demand mode when the server already has Unix-socket clients (whose
// connects happened before the hook or the server's discovery).
func (g *unixGate) serverAdded(srv discover.Server, log func(msg string, args ...any)) {
	if !g.c.cfg.Unix {
		return
	}
	if !g.onDemand {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.enable(log)
		return
	}
	if local, err := hasLocalBackends(srv); err != nil || local {
		// Unknown counts as yes: a missed session is worse than a few idle seconds of cost.
		g.trigger()
	}
}

// connect handles a client connecting to a watched server's socket.
func (g *unixGate) connect() {
	g.c.m.unixTriggers.Inc()
	if g.onDemand {
		g.trigger()
	}
}

func (g *unixGate) trigger() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.busy = time.Now()
	g.enable(g.c.log.Warn)
}

// enable attaches the tracepoints; g.mu is held.
func (g *unixGate) enable(log func(msg string, args ...any)) {
	if g.on {
		return
	}
	if err := g.c.tracer.EnableUnix(true); err != nil {
		log("Unix-socket capture unavailable", "error", err)
		return
	}
	g.on = true
	g.c.m.unixOn.Set(1)
}

// opened and closed track the Unix-socket sessions capture decodes (capture goroutine).
func (g *unixGate) opened(pid uint32) {
	g.mu.Lock()
	g.sessions[pid] = struct{}{}
	g.mu.Unlock()
}

func (g *unixGate) closed(pid uint32) {
	g.mu.Lock()
	delete(g.sessions, pid)
	g.mu.Unlock()
}

// run switches Unix capture off when it has been idle for the quiet period. It runs on its
// own goroutine: the capture goroutine only runs when records arrive, and an idle host
// sends none.
func (g *unixGate) run(ctx context.Context) {
	if !g.onDemand {
		return
	}
	tick := time.NewTicker(min(max(g.quiet/4, 50*time.Millisecond), time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			g.check(now)
		}
	}
}

func (g *unixGate) check(now time.Time) {
	g.mu.Lock()
	if lost := g.c.tracer.Stats().UnixConnect.LostRecords; lost > g.lost {
		// A connect the kernel could not report may be a session starting now.
		g.lost = lost
		g.busy = now
		g.enable(g.c.log.Warn)
	}
	if !g.on {
		g.mu.Unlock()
		return
	}
	for pid := range g.sessions {
		// The capture goroutine closes a session only when records arrive to drive its
		// sweep; the ticker checks the backend itself.
		if _, err := os.Stat("/proc/" + strconv.Itoa(int(pid))); err == nil {
			g.busy = now
			break
		}
	}
	busy := g.busy
	g.mu.Unlock()
	if now.Sub(busy) < g.quiet {
		return
	}
	// A Unix-socket backend capture has no session for (idle since capture joined, or its
	// records not read yet) still keeps capture on: process titles say "[local]".
	if g.c.servers.anyLocalBackend() {
		g.mu.Lock()
		g.busy = now
		g.mu.Unlock()
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.on || !g.busy.Equal(busy) {
		return // a connect arrived meanwhile
	}
	if err := g.c.tracer.EnableUnix(false); err != nil {
		g.c.log.Error("switching Unix-socket capture off", "error", err)
		return
	}
	g.on = false
	g.c.m.unixOn.Set(0)
}

// hasLocalBackends says whether a server has Unix-socket clients, from its backends' titles.
func hasLocalBackends(srv discover.Server) (bool, error) {
	bs, err := discover.Backends(srv)
	for _, b := range bs {
		if b.Local {
			return true, nil
		}
	}
	return false, err
}

// pgSocketPort reads the port from a PostgreSQL socket path (".../.s.PGSQL.5432").
func pgSocketPort(path string) (uint16, bool) {
	i := strings.LastIndex(path, "/.s.PGSQL.")
	if i < 0 {
		return 0, false
	}
	p, err := strconv.ParseUint(path[i+len("/.s.PGSQL."):], 10, 16)
	return uint16(p), err == nil && p != 0
}
