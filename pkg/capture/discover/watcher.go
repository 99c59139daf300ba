package discover

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// ChangeKind says what happened to a server between two scans.
type ChangeKind int

const (
	// Added: a server started (or was there when the watcher started).
	Added ChangeKind = iota
	// Removed: the server exited.
	Removed
	// Updated: the server is the same instance but its listeners or data directory changed
	// (a postmaster seen while still starting, before its sockets were open).
	Updated
)

func (k ChangeKind) String() string {
	return [...]string{"added", "removed", "updated"}[k]
}

// Change is one server's change, reported by a Watcher.
type Change struct {
	Kind   ChangeKind
	Server Server
}

// Watcher rescans the host periodically and reports servers as they start and stop, so the
// agent attaches to servers started after it.
type Watcher struct {
	// Interval between scans; default 10s.
	Interval time.Duration
	// Config names servers beyond those discovered (see Config).
	Config []Config
	Logger *slog.Logger

	mu      sync.Mutex
	current map[string]Server
}

// Run scans at once and then every Interval until ctx ends, calling report for each change,
// from Run's goroutine, in order. Servers already running come first as Added. A failed scan
// is logged and retried at the next interval; Run returns nil when ctx ends.
func (w *Watcher) Run(ctx context.Context, report func(Change)) error {
	interval := w.Interval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	log := w.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "discover")
	t := time.NewTicker(interval)
	defer t.Stop()
	lastProblem := ""
	for {
		servers, problems, err := scan(w.Config)
		switch {
		case err != nil:
			// Keep the last known set: a failed scan is no evidence that servers stopped.
			log.Warn("scanning for database servers", "err", err)
		default:
			// The same problem every interval is logged once, until it changes.
			if p := errors.Join(problems...); p != nil && p.Error() != lastProblem {
				log.Warn("database server discovery", "err", p)
				lastProblem = p.Error()
			} else if p == nil {
				lastProblem = ""
			}
			for _, c := range w.update(servers) {
				log.Info("database server "+c.Kind.String(), "protocol", c.Server.Protocol, "pid", c.Server.PID,
					"exe", c.Server.Exe, "data_dir", c.Server.DataDir, "listen", c.Server.Listen, "unix_sockets", c.Server.UnixSockets)
				report(c)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Servers returns the servers as of the last scan, sorted by pid.
func (w *Watcher) Servers() []Server {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := slices.Collect(maps.Values(w.current))
	slices.SortFunc(out, func(a, b Server) int { return a.PID - b.PID })
	return out
}

// update replaces the current set and returns the differences: removals first, so that an
// agent re-attaching to a restarted server on a reused port lets go of the old one first.
func (w *Watcher) update(servers []Server) []Change {
	next := make(map[string]Server, len(servers))
	for _, s := range servers {
		next[s.Key()] = s
	}
	w.mu.Lock()
	prev := w.current
	w.current = next
	w.mu.Unlock()

	var out []Change
	for _, k := range slices.Sorted(maps.Keys(prev)) {
		if _, ok := next[k]; !ok {
			out = append(out, Change{Removed, prev[k]})
		}
	}
	for _, s := range servers {
		old, ok := prev[s.Key()]
		switch {
		case !ok:
			out = append(out, Change{Added, s})
		case !sameShape(old, s):
			out = append(out, Change{Updated, s})
		}
	}
	return out
}

func sameShape(a, b Server) bool {
	return a.DataDir == b.DataDir && a.Name == b.Name &&
		slices.Equal(a.Listen, b.Listen) && slices.Equal(a.UnixSockets, b.UnixSockets)
}
