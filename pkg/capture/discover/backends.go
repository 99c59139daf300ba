package discover

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/identity"
)

// Backend is a PostgreSQL server process serving one client connection, as its process
// title describes it. The title is how the agent learns user and database for connections
// opened before it started (it missed their startup messages).
type Backend struct {
	PID       int
	StartTime uint64
	// ServerPID is the postmaster's pid.
	ServerPID int
	User      string
	// Database is empty for a physical replication connection.
	Database string
	// ClientAddr is the client's address and port; zero for Unix-socket clients, and for
	// clients the title names by host name (log_hostname = on; see ClientHost).
	ClientAddr netip.AddrPort
	// ClientHost is the client as the title shows it: an address, a host name, or [local].
	ClientHost string
	ClientPort uint16
	// Local is set for Unix-socket clients.
	Local bool
	// Replication marks a walsender: a replication client (standby, pg_basebackup, logical
	// subscriber), whose statements are replication commands.
	Replication bool
	// State is the activity the title shows: idle, idle in transaction, the command tag of
	// the running statement, or a walsender's state. Empty with update_process_title = off.
	State string
}

// auxiliaryTitles are the process titles of a postmaster's own processes (PostgreSQL 9.6
// to 17). One of them reveals the cluster_name prefix of every title of that server.
var auxiliaryTitles = []string{
	"checkpointer", "background writer", "walwriter", "autovacuum launcher",
	"logical replication launcher", "stats collector", "archiver", "logger",
}

const titlePrefix = "postgres: "

// Backends lists the client backends (and walsenders) of a PostgreSQL server: the
// postmaster's children whose title carries a client. Auxiliary processes, autovacuum and
// parallel workers, and children too young to have a title yet are left out.
func Backends(s Server) ([]Backend, error) {
	if s.Protocol != event.ProtocolPostgres {
		return nil, fmt.Errorf("backends of a %s server: only PostgreSQL runs a process per connection", s.Protocol)
	}
	kids, cluster, known, err := children(s.PID, s.StartTime)
	if err != nil {
		return nil, err
	}
	var out []Backend
	for _, k := range kids {
		b, ok := parseTitle(k.title, cluster, known)
		if !ok {
			continue
		}
		b.PID, b.StartTime, b.ServerPID = k.st.PID, k.st.StartTime, s.PID
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b Backend) int { return a.PID - b.PID })
	return out, nil
}

type child struct {
	st    identity.Stat
	title string
}

// children lists a postmaster's children with their titles, and the server's title prefix
// (cluster) as its auxiliary processes show it; known is false when none was seen.
func children(ppid int, pstart uint64) (kids []child, cluster string, known bool, err error) {
	pids, err := identity.Pids()
	if err != nil {
		return nil, "", false, err
	}
	for _, pid := range pids {
		st, err := identity.ReadStat(pid)
		if err != nil || st.PPID != ppid || st.StartTime < pstart {
			continue
		}
		args, err := identity.ReadCmdline(pid)
		if err != nil || len(args) == 0 {
			continue
		}
		title := strings.TrimRight(args[0], " ")
		if p, ok := clusterPrefix(title); ok {
			cluster, known = p, true
		}
		kids = append(kids, child{st, title})
	}
	cacheCluster(ppid, pstart, cluster, known)
	return kids, cluster, known, nil
}

// The title prefix of each server, by postmaster pid and start time, for BackendByPID: a
// handful of servers per host, so the map is simply reset when it grows past a bound.
var clusters = struct {
	sync.Mutex
	m map[[2]uint64]string
}{m: make(map[[2]uint64]string)}

func cacheCluster(pid int, start uint64, cluster string, known bool) {
	if !known {
		return
	}
	clusters.Lock()
	defer clusters.Unlock()
	if len(clusters.m) >= 256 {
		clear(clusters.m)
	}
	clusters.m[[2]uint64{uint64(pid), start}] = cluster
}

// clusterOf returns a server's title prefix, scanning its children on the first call.
func clusterOf(pid int) (string, bool) {
	st, err := identity.ReadStat(pid)
	if err != nil {
		return "", false
	}
	clusters.Lock()
	c, ok := clusters.m[[2]uint64{uint64(pid), st.StartTime}]
	clusters.Unlock()
	if ok {
		return c, true
	}
	_, c, ok, err = children(pid, st.StartTime)
	return c, ok && err == nil
}

// clusterPrefix recognizes an auxiliary process's title and returns what stands between
// "postgres: " and its name: "" or "CLUSTER_NAME: ".
func clusterPrefix(title string) (string, bool) {
	rest, ok := strings.CutPrefix(title, titlePrefix)
	if !ok {
		return "", false
	}
	for _, aux := range auxiliaryTitles {
		if p, ok := strings.CutSuffix(rest, aux); ok && (p == "" || strings.HasSuffix(p, ": ")) {
			return p, true
		}
	}
	return "", false
}

// hostPortRe matches the client part of a title: HOST(PORT), where HOST is an IPv4 or IPv6
// address or a host name.
var hostPortRe = regexp.MustCompile(`^(.+)\((\d{1,5})\)$`)

// parseTitle reads a backend's process title, which PostgreSQL writes as
//
//	postgres: [CLUSTER: ][walsender ]USER [DATABASE ]HOST(PORT)|[local] [STATE]
//
// cluster is the "CLUSTER: " prefix ("" without cluster_name) when known from the server's
// auxiliary processes; when it is not known, anything up to the last ": " before the client
// is taken for the cluster name.
//
// USER and DATABASE come from the client's startup message, so a client can put anything
// there, such as a fake "10.0.0.1(5432)"; everything after the client part is the server's
// own. The client part is therefore the last word that looks like one. User and database
// names may contain spaces (quoted identifiers); the first word is taken as the user and
// the rest as the database. A role named "walsender" on an ordinary connection reads like a
// replication connection; the title alone cannot tell them apart.
func parseTitle(title, cluster string, known bool) (Backend, bool) {
	rest, ok := strings.CutPrefix(strings.TrimRight(title, " "), titlePrefix)
	if !ok {
		return Backend{}, false
	}
	if known {
		if rest, ok = strings.CutPrefix(rest, cluster); !ok {
			return Backend{}, false
		}
	}
	words := strings.Split(rest, " ")
	host := -1
	for i := len(words) - 1; i >= 0; i-- {
		if words[i] == "[local]" || hostPortRe.MatchString(words[i]) {
			host = i
			break
		}
	}
	if host < 0 {
		return Backend{}, false
	}
	who := strings.Join(words[:host], " ")
	if !known {
		if i := strings.LastIndex(who, ": "); i >= 0 {
			who = who[i+2:]
		}
	}
	var b Backend
	for _, p := range []string{"walsender ", "wal sender process "} { // 10+, then 9.x
		if w, ok := strings.CutPrefix(who, p); ok {
			who, b.Replication = w, true
			break
		}
	}
	b.User, b.Database, _ = strings.Cut(who, " ")
	if b.User == "" {
		return Backend{}, false
	}
	b.State = strings.Join(words[host+1:], " ")
	b.ClientHost = words[host]
	if b.ClientHost == "[local]" {
		b.Local = true
		return b, true
	}
	m := hostPortRe.FindStringSubmatch(words[host])
	port, err := strconv.ParseUint(m[2], 10, 16)
	if err != nil {
		return Backend{}, false
	}
	b.ClientHost, b.ClientPort = m[1], uint16(port)
	if a, err := netip.ParseAddr(m[1]); err == nil {
		b.ClientAddr = netip.AddrPortFrom(a.Unmap(), b.ClientPort)
	}
	return b, true
}

// BackendByClient returns the backend serving the TCP client at the given address. Where the
// title names the client by host name, the candidate with the client's port is confirmed
// from its socket.
func BackendByClient(s Server, client netip.AddrPort) (Backend, error) {
	client = netip.AddrPortFrom(client.Addr().Unmap(), client.Port())
	bs, err := Backends(s)
	if err != nil {
		return Backend{}, err
	}
	for _, b := range bs {
		if b.ClientAddr == client {
			return b, nil
		}
	}
	for _, b := range bs {
		if b.Local || b.ClientAddr.IsValid() || b.ClientPort != client.Port() {
			continue
		}
		if so, err := identity.SocketOf(b.PID); err == nil && so.Remote == client {
			return b, nil
		}
	}
	return Backend{}, fmt.Errorf("backend of client %s on server %d: %w", client, s.PID, identity.ErrNotFound)
}

// BackendByPID describes one backend process, for a pid seen in an event. The first call for
// a server reads its other processes once, to learn its cluster_name from their titles.
func BackendByPID(pid int) (Backend, error) {
	exe, _, err := identity.ReadExe(pid)
	if err != nil {
		return Backend{}, err
	}
	if !slices.Contains(postgresExes, path.Base(exe)) {
		return Backend{}, fmt.Errorf("process %d runs %s, not PostgreSQL: %w", pid, exe, ErrNotBackend)
	}
	st, err := identity.ReadStat(pid)
	if err != nil {
		return Backend{}, err
	}
	args, err := identity.ReadCmdline(pid)
	if err != nil {
		return Backend{}, err
	}
	if len(args) == 0 {
		return Backend{}, fmt.Errorf("process %d has no title: %w", pid, ErrNotBackend)
	}
	cluster, known := clusterOf(st.PPID)
	b, ok := parseTitle(args[0], cluster, known)
	if !ok {
		return Backend{}, fmt.Errorf("process %d (%q) is not a client backend: %w", pid, args[0], ErrNotBackend)
	}
	b.PID, b.StartTime, b.ServerPID = pid, st.StartTime, st.PPID
	return b, nil
}

// ErrNotBackend says a process is not a PostgreSQL client backend (BackendByPID).
var ErrNotBackend = errors.New("not a PostgreSQL client backend")
