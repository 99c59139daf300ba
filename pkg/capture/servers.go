package capture

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/vigil-db/vigil/pkg/capture/discover"
	"github.com/vigil-db/vigil/pkg/event"
)

// serverSet keeps the kernel hooks pointed at the database servers on the host: their
// ports for the network path, their processes for the Unix-socket path, their binaries for
// the TLS uprobes. Discovery runs on its own goroutine; the capture goroutine reads the
// result through the lookups below.
type serverSet struct {
	c *Capturer

	mu       sync.Mutex
	servers  map[string]discover.Server // by Key
	binaries map[fileID]string          // TLS uprobes attached, by file identity
}

// fileID names a file by device and inode: the same binary reached through different
// /proc/PID/root paths must get its uprobes once, or every TLS read would be seen twice.
type fileID struct{ dev, ino uint64 }

func newServerSet(c *Capturer) *serverSet {
	return &serverSet{c: c, servers: map[string]discover.Server{}, binaries: map[fileID]string{}}
}

func (s *serverSet) config() []discover.Config {
	var out []discover.Config
	for i, st := range s.c.cfg.Servers {
		dc := discover.Config{Name: fmt.Sprintf("servers[%d]", i), Protocol: event.ProtocolPostgres, Exe: st.Binary}
		for _, p := range st.Ports {
			dc.Ports = append(dc.Ports, int(p))
		}
		out = append(out, dc)
	}
	return out
}

// refresh scans once, synchronously: the agent reports ready only after the servers
// already running are watched.
func (s *serverSet) refresh() error {
	servers, err := discover.Scan(s.config()...)
	for _, srv := range servers {
		if s.c.cfg.Discover || srv.Configured {
			s.apply(discover.Change{Kind: discover.Added, Server: srv})
		}
	}
	return err
}

// watch follows servers starting and stopping until ctx ends.
func (s *serverSet) watch(ctx context.Context, interval time.Duration) {
	w := &discover.Watcher{Interval: interval, Config: s.config(), Logger: s.c.log}
	_ = w.Run(ctx, func(ch discover.Change) {
		if s.c.cfg.Discover || ch.Server.Configured {
			s.apply(ch)
		}
	})
}

// apply points the hooks at a change. It is idempotent: the watcher's first scan reports
// the servers refresh already applied.
func (s *serverSet) apply(ch discover.Change) {
	srv := ch.Server
	if srv.Protocol != event.ProtocolPostgres {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch ch.Kind {
	case discover.Removed:
		delete(s.servers, srv.Key())
	default:
		if _, known := s.servers[srv.Key()]; known && ch.Kind == discover.Added {
			return
		}
		s.servers[srv.Key()] = srv
		s.attach(srv)
	}
	s.updatePorts()
	s.c.m.servers.Set(float64(len(s.servers)))
}

// attach watches one server's processes (Unix sockets) and binary (TLS).
func (s *serverSet) attach(srv discover.Server) {
	c := s.c
	log := c.log.With("server_pid", srv.PID, "data_dir", srv.DataDir)
	if err := c.tracer.WatchProcess(uint32(srv.PID)); err != nil {
		log.Warn("watching the server's processes: Unix-socket and TLS sessions of this server may be missed", "error", err)
	}
	c.unix.serverAdded(srv, log.Warn)
	if !c.cfg.TLS || srv.ExePath == "" {
		return
	}
	id, err := identify(srv.ExePath)
	if err != nil {
		log.Warn("TLS capture: server binary unreadable", "exe", srv.ExePath, "error", err)
		return
	}
	if _, done := s.binaries[id]; done {
		return
	}
	if err := c.tracer.AttachPostgresTLS(srv.ExePath); err != nil {
		log.Warn("TLS capture unavailable for this server: its TLS sessions will not be recorded", "exe", srv.Exe, "error", err)
		return
	}
	s.binaries[id] = srv.ExePath
	log.Info("TLS capture attached", "exe", srv.Exe)
}

func (s *serverSet) updatePorts() {
	ports := map[uint16]bool{}
	for _, srv := range s.servers {
		for _, l := range srv.Listen {
			ports[l.Port()] = true
		}
	}
	for _, st := range s.c.cfg.Servers {
		for _, p := range st.Ports {
			ports[p] = true
		}
	}
	s.c.ports.Store(&ports)
	list := make([]uint16, 0, len(ports))
	for p := range ports {
		list = append(list, p)
	}
	slices.Sort(list)
	if err := s.c.tracer.SetServerPorts(list); err != nil {
		s.c.log.Error("setting the watched server ports: TCP capture may miss servers", "ports", list, "error", err)
	}
}

// unixPort says whether a Unix socket named ".s.PGSQL.<port>" may be a watched server's: a
// port from a server's socket names, or a watched TCP port (a server whose sockets discovery
// could not list uses the same port number for both).
func (s *serverSet) unixPort(port uint16) bool {
	if (*s.c.ports.Load())[port] {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, srv := range s.servers {
		for _, path := range srv.UnixSockets {
			if p, ok := pgSocketPort(path); ok && p == port {
				return true
			}
		}
	}
	return false
}

// anyLocalBackend says whether a watched server has a Unix-socket client, or may have: a
// server whose backends cannot be listed counts as having one.
func (s *serverSet) anyLocalBackend() bool {
	s.mu.Lock()
	servers := make([]discover.Server, 0, len(s.servers))
	for _, srv := range s.servers {
		servers = append(servers, srv)
	}
	s.mu.Unlock()
	for _, srv := range servers {
		local, err := hasLocalBackends(srv)
		if err != nil {
			s.c.log.Warn("listing a server's backends: Unix-socket capture stays on", "server_pid", srv.PID, "error", err)
		}
		if local || err != nil {
			return true
		}
	}
	return false
}

// backendByClient finds the backend serving a TCP client of the server at server.
func (s *serverSet) backendByClient(client, server netip.AddrPort) (discover.Backend, bool) {
	s.mu.Lock()
	var cands []discover.Server
	for _, srv := range s.servers {
		for _, l := range srv.Listen {
			if l.Port() == server.Port() {
				cands = append(cands, srv)
				break
			}
		}
	}
	s.mu.Unlock()
	for _, srv := range cands {
		if b, err := discover.BackendByClient(srv, client); err == nil {
			return b, true
		}
	}
	return discover.Backend{}, false
}

// backendByPID describes a backend process from its title.
func (s *serverSet) backendByPID(pid int32) (discover.Backend, bool) {
	if pid == 0 {
		return discover.Backend{}, false
	}
	b, err := discover.BackendByPID(int(pid))
	return b, err == nil
}

func identify(path string) (fileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, errors.New("no inode information")
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, nil
}
