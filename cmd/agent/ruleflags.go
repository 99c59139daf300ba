package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-db/vigil/pkg/config"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/identity"
	"github.com/vigil-db/vigil/pkg/policy"
	"github.com/vigil-db/vigil/pkg/steer"
)

// Adaptive enforcement: a policy rule with a flag block flags the workload that capture saw
// match it — a workload that talks to a server directly, where Vigil can only watch — so
// that its next connections are steered into the proxy, and, if the rule says so, its open
// sessions are ended so that they reconnect through it.

// ruleFlagger sits between capture and the trail. It only looks at events: flagging runs
// on its own goroutine, so capture never waits for a flag or a database round trip.
type ruleFlagger struct {
	next   event.Sink
	engine *policy.Engine
	log    *slog.Logger
	reqs   chan ruleMatch
	st     atomic.Pointer[steering]
	// dropped counts requests that found the queue full: the flag is missed (the event is
	// still recorded, with the rule that matched).
	dropped atomic.Uint64
}

// ruleMatch is what flagging needs of an event (which the trail owns once emitted).
type ruleMatch struct {
	rule      string
	flag      policy.RuleFlag
	proc      event.Process
	backend   int32
	server    string
	client    string
	database  string
	statement string
}

func newRuleFlagger(next event.Sink, engine *policy.Engine, log *slog.Logger) *ruleFlagger {
	return &ruleFlagger{next: next, engine: engine, log: log.With("component", "rule-flags"), reqs: make(chan ruleMatch, 256)}
}

// Emit implements event.Sink.
func (rf *ruleFlagger) Emit(e *event.Event) {
	if e.Type == event.TypeStatement && e.Source == event.SourceEBPF && e.Rule != "" && e.Rule != policy.DefaultRule && e.Process != nil {
		if f := rf.engine.RuleFlag(e.Rule); f != nil && rf.st.Load() != nil {
			req := ruleMatch{rule: e.Rule, flag: *f, proc: *e.Process, backend: e.BackendPID, server: e.ServerAddr,
				client: e.ClientAddr, database: e.Database, statement: e.Statement}
			select {
			case rf.reqs <- req:
			default:
				if rf.dropped.Add(1) == 1 {
					rf.log.Warn("rule flags are coming faster than they are set: some workloads are not flagged", "rule", e.Rule)
				}
			}
		}
	}
	rf.next.Emit(e)
}

// run sets the flags requested until ctx ends.
func (rf *ruleFlagger) run(ctx context.Context, cfg *config.Config) {
	for {
		select {
		case <-ctx.Done():
			return
		case req := <-rf.reqs:
			if st := rf.st.Load(); st != nil {
				rf.apply(ctx, st, cfg, req)
			}
		}
	}
}

func (rf *ruleFlagger) apply(ctx context.Context, st *steering, cfg *config.Config, req ruleMatch) {
	sel, ok := workloadOf(req.proc)
	if !ok {
		rf.log.Warn("a flag rule matched, but the workload cannot be named (its process is gone and its cgroup unknown): not flagged",
			"rule", req.rule, "pid", req.proc.PID, "comm", req.proc.Comm)
		return
	}
	stmt := req.statement
	if len(stmt) > 120 {
		stmt = stmt[:120] + "…"
	}
	for_ := req.flag.For
	if for_ == 0 {
		for_ = policy.DefaultFlagFor
	}
	f, err := st.flags.Add(steer.Flag{Selector: sel, Origin: steer.OriginRule, By: "rule " + req.rule,
		Reason: fmt.Sprintf("%s[%d] ran %q on %s directly", req.proc.Comm, req.proc.PID, stmt, req.database),
		Until:  time.Now().Add(for_).UTC()})
	if err != nil {
		if !strings.Contains(err.Error(), "already flagged") {
			rf.log.Warn("flagging a workload a rule matched", "rule", req.rule, "selector", sel.String(), "err", err)
		}
		return
	}
	if !req.flag.Terminate {
		return
	}
	ended, err := terminateWorkload(ctx, cfg, req, sel)
	detail := fmt.Sprintf("rule %s ended %d open session(s) of %s on %s (backends %v), so that they reconnect through the proxy", req.rule, len(ended), sel, req.server, ended)
	if err != nil {
		detail = fmt.Sprintf("rule %s could not end the open sessions of %s on %s: %v (ended %v)", req.rule, sel, req.server, err, ended)
		rf.log.Error("ending a flagged workload's sessions", "rule", req.rule, "selector", sel.String(), "server", req.server, "err", err)
	}
	st.sink.Emit(&event.Event{Time: time.Now(), Type: event.TypeFlag, Rule: f.Name, Detail: detail})
}

// workloadOf is the selector for the workload a process belongs to: its cgroup (a
// container, a systemd service, a login session; never the root, nor the agent's own),
// else the process itself while it runs.
func workloadOf(p event.Process) (steer.Selector, bool) {
	own := ownCgroup()
	if p.Cgroup != "" && p.Cgroup != "/" && p.Cgroup != own {
		return steer.Selector{Cgroup: p.Cgroup}, true
	}
	if p.PID > 0 {
		if _, err := os.Stat("/proc/" + strconv.Itoa(int(p.PID))); err == nil {
			u := uint32(p.PID)
			return steer.Selector{PID: &u}, true
		}
	}
	return steer.Selector{}, false
}

func ownCgroup() string {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			return path
		}
	}
	return ""
}

// terminateWorkload ends the sessions of the workload on the server the statement went to:
// the session that matched, and every session whose client (over loopback TCP or a Unix
// socket, so a process on this host) belongs to the workload. It logs in as the catalog user of the proxy that fronts that
// server. It returns the backends it ended.
func terminateWorkload(ctx context.Context, cfg *config.Config, req ruleMatch, sel steer.Selector) ([]int32, error) {
	cc, err := catalogConfig(cfg, req.server, req.database)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", req.server, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	server, _ := netip.ParseAddrPort(req.server)
	rows, err := conn.Query(ctx, `SELECT pid, coalesce(host(client_addr), ''), coalesce(client_port, 0) FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()`)
	if err != nil {
		return nil, fmt.Errorf("listing sessions: %w", err)
	}
	var victims []int32
	for rows.Next() {
		var pid, port int32
		var addr string
		if err := rows.Scan(&pid, &addr, &port); err != nil {
			rows.Close()
			return nil, err
		}
		if pid == req.backend || belongs(pid, addr, port, server, sel) {
			victims = append(victims, pid)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var ended []int32
	for _, pid := range victims {
		var ok bool
		if err := conn.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&ok); err != nil {
			return ended, fmt.Errorf("ending backend %d: %w", pid, err)
		}
		if ok {
			ended = append(ended, pid)
		}
	}
	return ended, nil
}

// belongs says whether the session of backend (from addr:port to server) is the workload's:
// its client socket's owner is in the flagged cgroup (or below), or is the flagged process.
// pg_stat_activity gives a Unix-socket session port -1 and no address: its client is the
// process at the other end of the backend's socket.
func belongs(backend int32, addr string, port int32, server netip.AddrPort, sel steer.Selector) bool {
	var owner int
	if port == -1 {
		s, err := identity.SocketOf(int(backend))
		if err != nil || s.Network != "unix" {
			return false
		}
		if owner, err = identity.UnixPeer(int(backend), s.Inode); err != nil {
			return false
		}
	} else {
		a, err := netip.ParseAddr(addr)
		if err != nil || !a.IsLoopback() || !server.IsValid() {
			return false
		}
		if owner, err = identity.TCPOwner(netip.AddrPortFrom(a, uint16(port)), server); err != nil {
			return false
		}
	}
	return ownerIn(owner, sel)
}

// ownerIn says whether process owner is the flagged process, or in the flagged cgroup.
func ownerIn(owner int, sel steer.Selector) bool {
	if sel.PID != nil {
		return uint32(owner) == *sel.PID
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", owner))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			return path == sel.Cgroup || strings.HasPrefix(path, strings.TrimSuffix(sel.Cgroup, "/")+"/")
		}
	}
	return false
}

// catalogConfig is the catalog login of the proxy whose upstream is server (a host:port, or a
// Unix socket path as capture names it), for database.
func catalogConfig(cfg *config.Config, server, database string) (*pgx.ConnConfig, error) {
	var px *config.Proxy
	for i := range cfg.Proxies {
		if cfg.Proxies[i].Upstream == server {
			px = &cfg.Proxies[i]
		}
	}
	if px == nil && len(cfg.Proxies) == 1 {
		px = &cfg.Proxies[0] // one server behind one proxy, named differently (a socket path, a host name)
	}
	user, pw := "postgres", ""
	if px != nil {
		if px.CatalogUser != "" {
			user = px.CatalogUser
		}
		var err error
		if pw, err = secretFromEnv("catalog_password_env", px.CatalogPasswordEnv); err != nil {
			return nil, err
		}
	}
	host, port := server, "5432"
	if strings.HasPrefix(server, "/") {
		host = filepath.Dir(server)
		if i := strings.LastIndexByte(server, '.'); i >= 0 {
			port = server[i+1:]
		}
	} else if h, p, ok := strings.Cut(server, ":"); ok && !strings.Contains(p, ":") {
		host, port = h, p
	}
	if database == "" {
		database = "postgres"
	}
	q := func(v string) string { return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + "'" }
	cc, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=%s sslmode=prefer application_name=vigil-agent",
		q(host), q(port), q(user), q(pw), q(database)))
	if err != nil {
		return nil, fmt.Errorf("the catalog login for %s: %w", server, err)
	}
	return cc, nil
}
