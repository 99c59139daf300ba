// Package discover finds the database servers running on this host by themselves, without
// configuration: PostgreSQL postmasters (by executable), where they keep data, what they
// listen on, and their client backends with the user, database and client address each
// process title carries. The agent attaches its probes to what it finds, and a Watcher keeps
// the set current as servers start and stop.
package discover

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/identity"
)

// Server is one running database server instance.
type Server struct {
	// Protocol is event.ProtocolPostgres (and event.ProtocolMySQL once MySQL servers are
	// discovered): callers switch on it rather than on the executable's name.
	Protocol string
	// PID is the server's main process: the postmaster for PostgreSQL.
	PID int
	// StartTime (clock ticks since boot, /proc/PID/stat) tells this instance apart from a
	// later process that reuses its pid.
	StartTime uint64
	// Exe is the server executable as the server's own mount namespace names it.
	Exe string
	// ExePath opens that same file from the agent's mount namespace, for uprobes:
	// /proc/PID/root/<Exe>, or /proc/PID/exe when the file was replaced on disk since the
	// server started (a package upgrade), as then only the magic link still reaches it.
	ExePath string
	// DataDir is the data directory as the server names it.
	DataDir string
	// Version is the major version (PostgreSQL's PG_VERSION file), empty if unreadable.
	Version string
	// Listen holds the TCP addresses the server listens on, sorted.
	Listen []netip.AddrPort
	// UnixSockets holds the Unix socket paths the server listens on, as it names them (from
	// the agent, prefix /proc/PID/root), sorted.
	UnixSockets []string
	// Name is the name of the configuration entry that matched the server, if any.
	Name string
	// Configured says a configuration entry named the server (by executable or port).
	Configured bool
}

// Key names the server instance across scans: equal keys are the same running server.
func (s Server) Key() string {
	return fmt.Sprintf("%s/%d/%d", s.Protocol, s.PID, s.StartTime)
}

// Config names a server the agent must watch even where discovery would not recognize it:
// an executable under another name, or whatever process listens on given ports. A config
// entry that matches a discovered server labels it (Name, Configured).
type Config struct {
	Name string
	// Protocol defaults to postgres.
	Protocol string
	// Exe is the server binary's path (in the agent's mount namespace); processes running
	// that file are servers. With Ports it names no server by itself: many servers on a host
	// run the same binary, and an entry with ports means the one listening there. It still
	// makes processes running the file recognized as servers of Protocol.
	Exe string
	// Ports are TCP ports; the process listening on one (in the agent's network namespace)
	// is a server.
	Ports []int
}

// postgresExes are the basenames of PostgreSQL server executables: postmaster was a
// separate name (a hard link) up to PostgreSQL 15.
var postgresExes = []string{"postgres", "postmaster"}

// candidate is a process running a server executable.
type candidate struct {
	protocol string
	exe      string
	deleted  bool
	config   int // index of the Exe-only config entry naming it, else -1
}

// Scan lists the database servers running on this host, with the configured entries merged
// in. It reads every process's /proc/PID/exe, and for each server its fds and sockets: a
// scan costs a few milliseconds and is meant to run every few seconds, not per event.
// A server that cannot be described, or a configuration entry that cannot apply (its
// executable does not exist), is reported in the error while the servers found are still
// returned.
func Scan(configured ...Config) ([]Server, error) {
	servers, problems, err := scan(configured)
	if err != nil {
		return nil, err
	}
	return servers, errors.Join(problems...)
}

// scan is Scan with the problems of single servers and configuration entries (problems)
// kept apart from a failure to scan at all (err).
func scan(configured []Config) (servers []Server, problems []error, err error) {
	cfgs := slices.Clone(configured)
	cfgExe := make([]os.FileInfo, len(cfgs))
	anyExe := false
	for i := range cfgs {
		if cfgs[i].Protocol == "" {
			cfgs[i].Protocol = event.ProtocolPostgres
		}
		if cfgs[i].Exe != "" {
			fi, err := os.Stat(cfgs[i].Exe)
			if err != nil {
				problems = append(problems, fmt.Errorf("configured server %q: %w", cfgs[i].Name, err))
				continue
			}
			cfgExe[i], anyExe = fi, true
		}
	}

	pids, err := identity.Pids()
	if err != nil {
		return nil, nil, err
	}
	cands := make(map[int]candidate)
	for _, pid := range pids {
		exe, deleted, err := identity.ReadExe(pid)
		if err != nil {
			continue // kernel thread, or exited
		}
		c := candidate{exe: exe, deleted: deleted, config: -1}
		if slices.Contains(postgresExes, path.Base(exe)) {
			c.protocol = event.ProtocolPostgres
		}
		if anyExe {
			// Compare files, not names: the configured path may be a symlink, and the
			// server may see the binary under another path in its mount namespace.
			if pfi, err := os.Stat(procPath(pid, "exe")); err == nil {
				for i, fi := range cfgExe {
					if fi != nil && os.SameFile(fi, pfi) {
						c.protocol = cfgs[i].Protocol
						if len(cfgs[i].Ports) == 0 && c.config < 0 {
							c.config = i
						}
					}
				}
			}
		}
		if c.protocol != "" {
			cands[pid] = c
		}
	}

	for pid, c := range cands {
		st, err := identity.ReadStat(pid)
		if err != nil {
			continue
		}
		// Children of a server (backends, auxiliary processes) run the same binary.
		if p, ok := cands[st.PPID]; ok && p.protocol == c.protocol {
			continue
		}
		s, err := describe(pid, st, c)
		if errors.Is(err, identity.ErrNotFound) {
			continue
		}
		if err != nil {
			problems = append(problems, err)
			continue
		}
		// A server process that listens nowhere serves no clients: initdb's bootstrap
		// backend, `postgres --single`, `postgres -C`, or a postmaster still starting up,
		// which the next scan finds listening.
		if len(s.Listen) == 0 && len(s.UnixSockets) == 0 {
			continue
		}
		if c.config >= 0 {
			s.Name, s.Configured = cfgs[c.config].Name, true
		}
		servers = append(servers, s)
	}
	servers, problems = mergePorts(servers, cfgs, problems)
	slices.SortFunc(servers, func(a, b Server) int { return a.PID - b.PID })
	return servers, problems, nil
}

// mergePorts applies the port entries of the configuration: they label the discovered
// server listening on one of their ports, or make a server of the process that does.
func mergePorts(servers []Server, cfgs []Config, problems []error) ([]Server, []error) {
	for _, cfg := range cfgs {
		if len(cfg.Ports) == 0 {
			continue
		}
		matched := false
		for i := range servers {
			if servers[i].Protocol == cfg.Protocol && listensOn(servers[i], cfg.Ports) {
				servers[i].Name, servers[i].Configured, matched = cfg.Name, true, true
			}
		}
		if matched {
			continue
		}
		pid, err := listenerOwner(cfg.Ports)
		if errors.Is(err, identity.ErrNotFound) {
			continue // not running (yet); the next scan looks again
		}
		if err != nil {
			problems = append(problems, fmt.Errorf("configured server %q: %w", cfg.Name, err))
			continue
		}
		st, err := identity.ReadStat(pid)
		if err != nil {
			continue
		}
		exe, deleted, err := identity.ReadExe(pid)
		if err != nil {
			continue
		}
		s, err := describe(pid, st, candidate{protocol: cfg.Protocol, exe: exe, deleted: deleted})
		if err != nil {
			continue
		}
		s.Name, s.Configured = cfg.Name, true
		servers = append(servers, s)
	}
	return servers, problems
}

func listensOn(s Server, ports []int) bool {
	for _, a := range s.Listen {
		if slices.Contains(ports, int(a.Port())) {
			return true
		}
	}
	return false
}

// listenerOwner finds the process that listens on one of the TCP ports. It reads every fd
// on the host, so it runs only for configured ports that no discovered server explains.
func listenerOwner(ports []int) (int, error) {
	socks, err := identity.TCPListeners()
	if err != nil {
		return 0, err
	}
	for _, s := range socks {
		if slices.Contains(ports, int(s.Local.Port())) {
			return identity.Owner(s.Inode)
		}
	}
	return 0, fmt.Errorf("no listener on ports %v: %w", ports, identity.ErrNotFound)
}

// describe fills in a server from its process.
func describe(pid int, st identity.Stat, c candidate) (Server, error) {
	s := Server{Protocol: c.protocol, PID: pid, StartTime: st.StartTime, Exe: c.exe}
	if c.deleted {
		s.ExePath = procPath(pid, "exe")
	} else {
		s.ExePath = procPath(pid, "root") + c.exe
	}
	socks, err := identity.Listeners(pid)
	if err != nil {
		return Server{}, fmt.Errorf("listeners of server %d: %w", pid, err)
	}
	for _, so := range socks {
		switch so.Network {
		case "tcp":
			s.Listen = append(s.Listen, so.Local)
		case "unix":
			s.UnixSockets = append(s.UnixSockets, so.Path)
		}
	}
	slices.SortFunc(s.Listen, netip.AddrPort.Compare)
	slices.Sort(s.UnixSockets)
	if c.protocol == event.ProtocolPostgres {
		s.DataDir, s.Version = postgresDataDir(pid)
	}
	return s, nil
}

// postgresDataDir returns a postmaster's data directory and major version. The postmaster
// works in its data directory, so its cwd is the directory, whatever -D said (Debian's
// pg_ctlcluster passes the configuration directory as -D), and the second line of the
// postmaster.pid there names it as the server does. Both files are read through the
// /proc/PID/cwd magic link, which works across mount namespaces. Without a postmaster.pid
// (not yet written), -D from the command line is the best answer.
func postgresDataDir(pid int) (dir, version string) {
	cwd := procPath(pid, "cwd")
	if b, err := os.ReadFile(cwd + "/postmaster.pid"); err == nil {
		if lines := strings.Split(string(b), "\n"); len(lines) > 1 {
			dir = lines[1]
		}
	}
	if dir == "" {
		dir = dataDirArg(pid)
	}
	if b, err := os.ReadFile(cwd + "/PG_VERSION"); err == nil {
		version = strings.TrimSpace(string(b))
	}
	return dir, version
}

// dataDirArg returns the -D argument of a postmaster's command line.
func dataDirArg(pid int) string {
	args, err := identity.ReadCmdline(pid)
	if err != nil {
		return ""
	}
	for i, a := range args {
		if a == "-D" && i+1 < len(args) {
			return args[i+1]
		}
		if d, ok := strings.CutPrefix(a, "-D"); ok && d != "" {
			return d
		}
	}
	return ""
}

func procPath(pid int, name string) string {
	return "/proc/" + strconv.Itoa(pid) + "/" + name
}
