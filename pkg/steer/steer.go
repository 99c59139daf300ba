// Package steer moves the TCP connections that flagged workloads open to governed database
// servers into Vigil's enforcement proxy, in the kernel, with no change to the client: its
// connect() is rewritten to the proxy's listener, getpeername() still answers with the
// server it dialled, and the proxy reads who connected — pid, uid, cgroup, as the kernel saw
// them at connect() — from the accepted socket (Origin), never from what the client says.
//
// The programs (bpf/steer.c) are attached to the cgroup v2 root, so they see every process
// on the host (run the agent in the host's cgroup namespace). A connect() to a server with
// no route costs one hash lookup; a connection's setup costs one more in sockops.
package steer

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/vigil-db/vigil/pkg/bpffs"
	"github.com/vigil-db/vigil/pkg/cgroupfs"
)

// Config configures a Steerer.
type Config struct {
	// CgroupRoot is where the cgroup v2 hierarchy is mounted; empty: found (or mounted) by
	// cgroupfs.Root.
	CgroupRoot string
	// PinDir, when set, pins the attachments there so that they outlive the agent (fail
	// closed): while no agent runs, a flagged workload's connect() still goes to the proxy's
	// port, where nothing listens, and is refused, instead of reaching the server
	// unenforced. A later Load with the same PinDir takes over without a moment unsteered.
	// Empty: the attachments go with the agent (fail open).
	PinDir string
}

// Origin is what the kernel recorded about a steered connection when its client called
// connect().
type Origin struct {
	// Server is the address the client dialled (an IPv4 server as a plain IPv4 address).
	Server netip.AddrPort
	// Selector is the id of the flag that steered it (see FlagCgroup and friends).
	Selector uint32
	// PID is the thread that called connect(), TGID its process.
	PID, TGID uint32
	UID, GID  uint32
	// CgroupID is the cgroup v2 id of the process at connect().
	CgroupID uint64
	Comm     string
}

// Stats counts what the programs did.
type Stats struct {
	// Steered counts connect() calls rewritten to a proxy.
	Steered uint64
	// Handed counts steered connections whose identity reached the proxy's socket.
	Handed uint64
	// NoStorage counts steered connections whose identity could not be stored (kernel
	// memory); the proxy sees them without an Origin and must refuse them.
	NoStorage uint64
	// Remote counts connections from flagged source networks handed to a proxy.
	Remote uint64
	// RemoteRefused counts connections from flagged source networks refused because the
	// proxy of their port was gone (steer_fail: closed, no agent running).
	RemoteRefused uint64
}

// Steerer owns the loaded steering programs and their attachments.
type Steerer struct {
	log    *slog.Logger
	root   string
	pinDir string
	objs   steerObjects
	links  []link.Link

	mu       sync.Mutex
	closed   bool
	exeLinks []link.Link // the exec/fork/exit tracepoints, attached while an exe is flagged
	lookup   link.Link   // the sk_lookup program on the host's network namespace, attached while a source is flagged
	pinned   []string    // names of the pins this Steerer made
}

// Load loads the steering programs and attaches them to the cgroup v2 root. Nothing is
// steered until a route and a flag exist.
func Load(cfg Config, log *slog.Logger) (*Steerer, error) {
	if log == nil {
		log = slog.Default()
	}
	root := cfg.CgroupRoot
	if root == "" {
		var err error
		if root, err = cgroupfs.Root(); err != nil {
			return nil, fmt.Errorf("steering needs the cgroup v2 hierarchy: %w", err)
		}
	}
	spec, err := loadSteer()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded steering object: %w", err)
	}
	if err := spec.Variables["self_tgid"].Set(uint32(os.Getpid())); err != nil {
		return nil, fmt.Errorf("setting the agent's pid: %w", err)
	}
	s := &Steerer{log: log, root: root, pinDir: cfg.PinDir}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("loading the steering programs (verifier log follows): %+v", verr)
		}
		return nil, fmt.Errorf("loading the steering programs (needs root or CAP_BPF+CAP_NET_ADMIN): %w", err)
	}
	if s.pinDir != "" {
		if err := bpffs.Ensure(s.pinDir); err != nil {
			s.Close()
			return nil, fmt.Errorf("steering that fails closed pins its hooks: %w", err)
		}
	}
	for _, a := range []struct {
		pin    string
		prog   *ebpf.Program
		attach ebpf.AttachType
	}{
		{"cgroup_connect4", s.objs.SteerConnect4, ebpf.AttachCGroupInet4Connect},
		{"cgroup_connect6", s.objs.SteerConnect6, ebpf.AttachCGroupInet6Connect},
		{"cgroup_getpeername4", s.objs.SteerGetpeername4, ebpf.AttachCgroupInet4GetPeername},
		{"cgroup_getpeername6", s.objs.SteerGetpeername6, ebpf.AttachCgroupInet6GetPeername},
		{"cgroup_sockops", s.objs.SteerSockops, ebpf.AttachCGroupSockOps},
	} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: root, Attach: a.attach, Program: a.prog})
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("attaching %s to cgroup %s: %w", a.prog, root, err)
		}
		s.links = append(s.links, l)
		if err := s.pin(a.pin, l); err != nil {
			s.Close()
			return nil, err
		}
	}
	if s.pinDir != "" {
		s.sweepPins()
	}
	return s, nil
}

// pinPrefix starts every steering pin's name.
const pinPrefix = "steer_"

// pin pins l as name in the pin directory, replacing what an earlier agent pinned there:
// its hook runs until this one's is attached beside it (this Load attaches first), so no
// connect() goes unsteered in between. Two connect programs in a row are harmless: the
// second sees the proxy's address, which has no route.
func (s *Steerer) pin(name string, l link.Link) error {
	if s.pinDir == "" {
		return nil
	}
	path := filepath.Join(s.pinDir, pinPrefix+name)
	if old, err := link.LoadPinnedLink(path, nil); err == nil {
		_ = old.Unpin()
		_ = old.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		// Not a link we can load (another build's, a stray file): out of the way.
		_ = os.Remove(path)
	}
	if err := l.Pin(path); err != nil {
		return fmt.Errorf("pinning the steering hook %s: %w", name, err)
	}
	s.pinned = append(s.pinned, pinPrefix+name)
	return nil
}

// sweepPins removes steering pins this Steerer did not make: an earlier agent's exec
// tracking, which this one pins again when it flags an executable. Until then a process
// that starts running a flagged executable is not steered.
func (s *Steerer) sweepPins() {
	ents, err := os.ReadDir(s.pinDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), pinPrefix) && !slices.Contains(s.pinned, e.Name()) {
			if err := os.Remove(filepath.Join(s.pinDir, e.Name())); err != nil {
				s.log.Warn("removing an earlier agent's steering pin", "pin", e.Name(), "err", err)
			}
		}
	}
}

// addrKey is an address in the programs' form: IPv6, IPv4 as v4-mapped.
func addrKey(ap netip.AddrPort) steerSteerAddr {
	return steerSteerAddr{Addr: ap.Addr().As16(), Port: ap.Port()}
}

// AddRoute steers flagged connections to server into proxy. Both must be of one family
// (an IPv4 server's proxy listens on IPv4), since connect() cannot change a socket's family.
func (s *Steerer) AddRoute(server, proxy netip.AddrPort) error {
	server = netip.AddrPortFrom(server.Addr().Unmap(), server.Port())
	proxy = netip.AddrPortFrom(proxy.Addr().Unmap(), proxy.Port())
	if server.Addr().Is4() != proxy.Addr().Is4() {
		return fmt.Errorf("route %s → %s: the proxy must listen in the server's address family", server, proxy)
	}
	k, v := addrKey(server), addrKey(proxy)
	if err := s.objs.Routes.Put(&k, &v); err != nil {
		return fmt.Errorf("route %s → %s: %w", server, proxy, err)
	}
	return nil
}

// RemoveRoute stops steering to server. Connections already steered stay where they are.
func (s *Steerer) RemoveRoute(server netip.AddrPort) error {
	k := addrKey(netip.AddrPortFrom(server.Addr().Unmap(), server.Port()))
	if err := s.objs.Routes.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("removing the route to %s: %w", server, err)
	}
	return nil
}

// CgroupID is the cgroup v2 id of a cgroup given by its path in the hierarchy as it
// appears in the 0:: line of /proc/PID/cgroup ("/system.slice/x.service"): the inode of its
// directory.
func (s *Steerer) CgroupID(path string) (uint64, error) {
	dir := filepath.Join(s.root, filepath.Clean("/"+path))
	st, err := os.Stat(dir)
	if err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", path, err)
	}
	if !st.IsDir() {
		return 0, fmt.Errorf("cgroup %s: %s is not a directory", path, dir)
	}
	return st.Sys().(*syscall.Stat_t).Ino, nil
}

// FlagCgroup steers processes in the cgroup at path, or below it, under selector sel
// (non-zero: it comes back in Origin.Selector).
func (s *Steerer) FlagCgroup(path string, sel uint32) error {
	if sel == 0 {
		return errors.New("selector id 0 is reserved")
	}
	id, err := s.CgroupID(path)
	if err != nil {
		return err
	}
	if err := s.objs.FlaggedCgroups.Put(id, sel); err != nil {
		return fmt.Errorf("flagging cgroup %s: %w", path, err)
	}
	return nil
}

// UnflagCgroup stops steering the cgroup at path.
func (s *Steerer) UnflagCgroup(path string) error {
	id, err := s.CgroupID(path)
	if err != nil {
		return err
	}
	if err := s.objs.FlaggedCgroups.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unflagging cgroup %s: %w", path, err)
	}
	return nil
}

// FlagUID steers the processes of a user.
func (s *Steerer) FlagUID(uid, sel uint32) error {
	if sel == 0 {
		return errors.New("selector id 0 is reserved")
	}
	if err := s.objs.FlaggedUids.Put(uid, sel); err != nil {
		return fmt.Errorf("flagging uid %d: %w", uid, err)
	}
	return nil
}

// UnflagUID stops steering a user's processes.
func (s *Steerer) UnflagUID(uid uint32) error {
	if err := s.objs.FlaggedUids.Delete(uid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unflagging uid %d: %w", uid, err)
	}
	return nil
}

// byExe marks, in flagged_tgids, a process flagged for the executable it runs (see
// bpf/steer.c); selector ids stay below it.
const byExe = 0x80000000

// FlagProcess steers one process (a thread group id) and the children it forks from now
// on, whatever they exec.
func (s *Steerer) FlagProcess(tgid, sel uint32) error {
	if sel == 0 || sel >= byExe {
		return fmt.Errorf("selector id %d out of range", sel)
	}
	if err := s.attachExecTracking(); err != nil {
		return err
	}
	if err := s.objs.FlaggedTgids.Put(tgid, sel); err != nil {
		return fmt.Errorf("flagging process %d: %w", tgid, err)
	}
	return nil
}

// UnflagProcess stops steering a process; call it when the process exits, too.
func (s *Steerer) UnflagProcess(tgid uint32) error {
	if err := s.objs.FlaggedTgids.Delete(tgid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unflagging process %d: %w", tgid, err)
	}
	return nil
}

// FlagExe steers the processes that run the executable at path: those running it now,
// those that exec it from now on (matched on the path given to execve, so name it as it is
// executed: "/usr/bin/psql", not a relative path), and their children.
func (s *Steerer) FlagExe(path string, sel uint32) error {
	if sel == 0 || sel >= byExe {
		return fmt.Errorf("selector id %d out of range", sel)
	}
	if !filepath.IsAbs(path) {
		return fmt.Errorf("exe %q: give an absolute path", path)
	}
	var key steerSteerPath
	if len(path) >= len(key.Name) {
		return fmt.Errorf("exe %q: longer than %d bytes", path, len(key.Name)-1)
	}
	for i := range len(path) {
		key.Name[i] = int8(path[i])
	}
	if err := s.attachExecTracking(); err != nil {
		return err
	}
	if err := s.objs.FlaggedExes.Put(&key, sel); err != nil {
		return fmt.Errorf("flagging exe %s: %w", path, err)
	}
	// Processes that exec'd it before the tracepoints were attached are found in /proc,
	// after the attach so that none falls between the two.
	want := map[string]bool{path: true}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		want[real] = true
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("flagging exe %s: listing processes: %w", path, err)
	}
	for _, p := range procs {
		var tgid uint32
		if _, err := fmt.Sscan(p.Name(), &tgid); err != nil {
			continue
		}
		if exe, err := os.Readlink("/proc/" + p.Name() + "/exe"); err == nil && want[exe] {
			if err := s.objs.FlaggedTgids.Put(tgid, sel|byExe); err != nil {
				return fmt.Errorf("flagging process %d running %s: %w", tgid, path, err)
			}
		}
	}
	return nil
}

// UnflagExe stops steering an executable, and the processes flagged for running it.
func (s *Steerer) UnflagExe(path string, sel uint32) error {
	var key steerSteerPath
	for i := range min(len(path), len(key.Name)-1) {
		key.Name[i] = int8(path[i])
	}
	if err := s.objs.FlaggedExes.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unflagging exe %s: %w", path, err)
	}
	var tgid, v uint32
	var gone []uint32
	it := s.objs.FlaggedTgids.Iterate()
	for it.Next(&tgid, &v) {
		if v == sel|byExe {
			gone = append(gone, tgid)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("unflagging exe %s: %w", path, err)
	}
	for _, tgid := range gone {
		if err := s.UnflagProcess(tgid); err != nil {
			return err
		}
	}
	return nil
}

func (s *Steerer) attachExecTracking() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exeLinks != nil {
		return nil
	}
	for _, tp := range []struct {
		name string
		prog *ebpf.Program
	}{
		{"sched_process_exec", s.objs.SteerExec},
		{"sched_process_fork", s.objs.SteerFork},
		{"sched_process_exit", s.objs.SteerExit},
	} {
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp.name, Program: tp.prog})
		if err == nil {
			s.exeLinks = append(s.exeLinks, l)
			err = s.pin("tp_"+tp.name, l)
		}
		if err != nil {
			for _, l := range s.exeLinks {
				_ = l.Unpin()
				l.Close()
			}
			s.exeLinks = nil
			return fmt.Errorf("attaching raw tracepoint %s (needed to steer by executable): %w", tp.name, err)
		}
	}
	return nil
}

// FlagSource steers connections that arrive from another host, from the network prefix,
// to a governed server's port (see AddRemoteRoute) into the proxy. Loopback sources are
// local processes, which the cgroup, uid, exe and pid flags select.
func (s *Steerer) FlagSource(prefix netip.Prefix, sel uint32) error {
	if sel == 0 || sel >= byExe {
		return fmt.Errorf("selector id %d out of range", sel)
	}
	key, err := prefixKey(prefix)
	if err != nil {
		return err
	}
	if err := s.attachLookup(); err != nil {
		return err
	}
	if err := s.objs.FlaggedSources.Put(&key, sel); err != nil {
		return fmt.Errorf("flagging source %s: %w", prefix, err)
	}
	return nil
}

// UnflagSource stops steering a source network.
func (s *Steerer) UnflagSource(prefix netip.Prefix) error {
	key, err := prefixKey(prefix)
	if err != nil {
		return err
	}
	if err := s.objs.FlaggedSources.Delete(&key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unflagging source %s: %w", prefix, err)
	}
	return nil
}

func prefixKey(p netip.Prefix) (steerSteerPrefix, error) {
	if !p.IsValid() {
		return steerSteerPrefix{}, fmt.Errorf("source %s: not a network prefix", p)
	}
	p = p.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	if p.Addr().Unmap().IsLoopback() {
		return steerSteerPrefix{}, fmt.Errorf("source %s: loopback clients are local processes: select them by cgroup, exe, uid or pid", p)
	}
	return steerSteerPrefix{Prefixlen: uint32(bits), Addr: p.Addr().As16()}, nil
}

// AddRemoteRoute makes the proxy listening on l receive the connections that flagged
// sources open to port on any of the host's addresses. The listener must be in the host's
// network namespace; its own address does not matter.
func (s *Steerer) AddRemoteRoute(port uint16, l syscall.Conn) error {
	raw, err := l.SyscallConn()
	if err != nil {
		return err
	}
	key := steerSteerAddr{Port: port}
	var perr error
	if err := raw.Control(func(fd uintptr) { perr = s.objs.ProxyListeners.Put(&key, uint64(fd)) }); err != nil {
		return err
	}
	if errors.Is(perr, unix.EOPNOTSUPP) {
		return fmt.Errorf("handing remote clients of port %d to the proxy: its listener must be a plain TCP socket (Go listens with MPTCP unless told not to): %w", port, perr)
	}
	if perr != nil {
		return fmt.Errorf("handing remote clients of port %d to the proxy: %w", port, perr)
	}
	if err := s.objs.GovernedPorts.Put(port, uint8(1)); err != nil {
		return fmt.Errorf("governing port %d for remote clients: %w", port, err)
	}
	return nil
}

// RemoteOrigin says whether a connection the proxy accepted was handed to it from a
// flagged source network, and by which selector.
func (s *Steerer) RemoteOrigin(remote netip.AddrPort) (uint32, bool) {
	key := addrKey(remote)
	var sel uint32
	if err := s.objs.RemoteSteered.Lookup(&key, &sel); err != nil {
		return 0, false
	}
	return sel, true
}

func (s *Steerer) attachLookup() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lookup != nil {
		return nil
	}
	ns, err := os.Open("/proc/self/ns/net")
	if err != nil {
		return fmt.Errorf("steering remote clients: %w", err)
	}
	defer ns.Close()
	l, err := link.AttachNetNs(int(ns.Fd()), s.objs.SteerLookup)
	if err != nil {
		return fmt.Errorf("attaching sk_lookup to the network namespace (needed to steer by source): %w", err)
	}
	if err := s.pin("netns_sk_lookup", l); err != nil {
		l.Close()
		return err
	}
	s.lookup = l
	return nil
}

// Origin returns what the kernel recorded about the client of a connection the proxy
// accepted, and false for a connection that was not steered (a client that dialled the
// proxy itself).
func (s *Steerer) Origin(conn syscall.Conn) (Origin, bool, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return Origin{}, false, fmt.Errorf("steering origin: %w", err)
	}
	var info steerSteerInfo
	var lerr error
	if err := raw.Control(func(fd uintptr) { lerr = s.objs.Steered.Lookup(int32(fd), &info) }); err != nil {
		return Origin{}, false, fmt.Errorf("steering origin: %w", err)
	}
	if errors.Is(lerr, ebpf.ErrKeyNotExist) {
		return Origin{}, false, nil
	}
	if lerr != nil {
		return Origin{}, false, fmt.Errorf("steering origin: %w", lerr)
	}
	addr := netip.AddrFrom16(info.Orig.Addr).Unmap()
	o := Origin{
		Server: netip.AddrPortFrom(addr, info.Orig.Port), Selector: info.Selector,
		PID: info.Pid, TGID: info.Tgid, UID: info.Uid, GID: info.Gid, CgroupID: info.CgroupId,
		Comm: cString(info.Comm[:]),
	}
	return o, true, nil
}

// Stats reads the programs' counters.
func (s *Steerer) Stats() (Stats, error) {
	var st Stats
	for i, dst := range []*uint64{&st.Steered, &st.Handed, &st.NoStorage, &st.Remote, &st.RemoteRefused} {
		var cpus []uint64
		if err := s.objs.SteerStats.Lookup(uint32(i), &cpus); err != nil {
			return st, fmt.Errorf("reading the steering counters: %w", err)
		}
		for _, n := range cpus {
			*dst += n
		}
	}
	return st, nil
}

// Close detaches the programs: connections that were steered stay with the proxy, new ones
// go where their clients dial. Pinned hooks (Config.PinDir) stay: they go with Unpin.
func (s *Steerer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	links := append(s.links, s.exeLinks...)
	if s.lookup != nil {
		links = append(links, s.lookup)
	}
	for _, l := range links {
		errs = append(errs, l.Close())
	}
	errs = append(errs, s.objs.Close())
	return errors.Join(errs...)
}

func cString(a []int8) string {
	b := make([]byte, 0, len(a))
	for _, c := range a {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// The net.Conn types the proxy accepts satisfy syscall.Conn.
var _ syscall.Conn = (*net.TCPConn)(nil)
