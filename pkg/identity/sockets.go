package identity

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Socket is one socket a process holds: a TCP connection or listener, or a Unix stream
// socket.
type Socket struct {
	Inode uint64
	FD    int
	// Network is "tcp" or "unix".
	Network   string
	Listening bool
	// Local and Remote are a TCP socket's own address and its peer's (Remote is zero for a
	// listener). IPv4 peers of dual-stack sockets are shown as IPv4.
	Local, Remote netip.AddrPort
	// Path is a Unix socket's name as the holder's mount namespace sees it ("@name" for an
	// abstract one). A socket a server accepted carries its listener's path; a client's end
	// usually has none.
	Path string
	// PeerInode is the inode of the Unix socket at the other end of a connection.
	PeerInode uint64
}

// socketInodes returns the socket inodes a process holds, each with its lowest fd.
func socketInodes(pid int) (map[uint64]int, error) {
	dir := procRoot + "/" + strconv.Itoa(pid) + "/fd"
	d, err := os.Open(dir)
	if err != nil {
		return nil, procErr(pid, err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, procErr(pid, err)
	}
	out := make(map[uint64]int)
	buf := make([]byte, 64)
	for _, name := range names {
		ino, ok := readSocketLink(int(d.Fd()), name, buf)
		if !ok {
			continue
		}
		fd, _ := strconv.Atoi(name)
		if old, seen := out[ino]; !seen || fd < old {
			out[ino] = fd
		}
	}
	return out, nil
}

// readSocketLink reads one /proc/PID/fd entry and returns its inode when it is a socket
// ("socket:[12345]"). Readlinkat on the open directory saves a path walk per fd, which
// matters when Owners reads every fd on the host.
func readSocketLink(dirfd int, name string, buf []byte) (uint64, bool) {
	n, err := unix.Readlinkat(dirfd, name, buf)
	if err != nil || n >= len(buf) {
		return 0, false
	}
	s, ok := strings.CutPrefix(string(buf[:n]), "socket:[")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
	return ino, err == nil
}

// Listeners describes the listening TCP and Unix stream sockets a process holds, sorted by
// fd. The kernel walks only its listening hash for the TCP part.
func Listeners(pid int) ([]Socket, error) { return sockets(pid, true) }

// Connections describes the connected TCP and Unix stream sockets a process holds, sorted by
// fd. The kernel walks the connection table of the process's network namespace for the TCP
// part: fine once per connection, not per statement.
func Connections(pid int) ([]Socket, error) { return sockets(pid, false) }

func sockets(pid int, listening bool) ([]Socket, error) {
	inodes, err := socketInodes(pid)
	if err != nil {
		return nil, err
	}
	if len(inodes) == 0 {
		return nil, nil
	}
	d, err := openDiag(pid)
	if err != nil {
		return nil, err
	}
	defer d.Close()

	var out []Socket
	unresolved := make(map[uint64]int)
	for ino, fd := range inodes {
		m, err := d.unixExact(uint32(ino), udiagShowName|udiagShowPeer)
		if errors.Is(err, ErrNotFound) {
			unresolved[ino] = fd // TCP, UDP, netlink, or closed meanwhile
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("describing sockets of process %d: %w", pid, err)
		}
		if m.typ == unix.SOCK_DGRAM || (m.state == tcpListen) != listening {
			continue
		}
		out = append(out, Socket{Inode: ino, FD: fd, Network: "unix", Listening: m.state == tcpListen, Path: m.name, PeerInode: uint64(m.peer)})
	}
	if len(unresolved) > 0 {
		states := uint32(tcpConnectedStates)
		if listening {
			states = 1 << tcpListen
		}
		socks, err := d.tcpDump(states)
		if err != nil {
			return nil, fmt.Errorf("describing sockets of process %d: %w", pid, err)
		}
		for _, m := range socks {
			fd, ok := unresolved[uint64(m.inode)]
			if !ok || m.inode == 0 {
				continue
			}
			s := Socket{Inode: uint64(m.inode), FD: fd, Network: "tcp", Listening: m.state == tcpListen, Local: m.local}
			if !s.Listening {
				s.Remote = m.remote
			}
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b Socket) int { return a.FD - b.FD })
	return out, nil
}

// SocketOf returns the connected socket of a process that serves one connection, such as a
// PostgreSQL backend: the one with the lowest fd when it holds several (a backend's client
// socket is inherited from the postmaster before it opens any of its own).
func SocketOf(pid int) (Socket, error) {
	socks, err := Connections(pid)
	if err != nil {
		return Socket{}, err
	}
	if len(socks) == 0 {
		return Socket{}, fmt.Errorf("process %d holds no connected socket: %w", pid, ErrNotFound)
	}
	return socks[0], nil
}

// TCPOwner returns the process on this host that holds the TCP socket whose own address is
// local and whose peer is remote; for a client of a local database, local is the client's
// address. The socket is looked up exactly, first in the agent's network namespace, then in
// each other one on the host: a client in a pod holds its socket in the pod's namespace. But
// finding the holder means reading every fd of every process, so this serves connections the
// agent did not see open (those opened before it started, or before a hook attached): once
// per connection, then cached by the caller. New connections get their process from
// connect/accept events instead.
func TCPOwner(local, remote netip.AddrPort) (int, error) {
	m, err := tcpLookup(local, remote)
	if err != nil {
		return 0, err
	}
	if m.inode == 0 {
		return 0, fmt.Errorf("TCP socket %s→%s has no inode (closing): %w", local, remote, ErrNotFound)
	}
	return Owner(uint64(m.inode))
}

func tcpLookup(local, remote netip.AddrPort) (inetDiagMsg, error) {
	d, err := openDiag(0)
	if err != nil {
		return inetDiagMsg{}, err
	}
	m, err := d.tcpExact(local, remote)
	d.Close()
	if !errors.Is(err, ErrNotFound) {
		return m, err
	}
	others, err := otherNetns()
	if err != nil {
		return inetDiagMsg{}, err
	}
	for _, pid := range others {
		d, err := openDiag(pid)
		if err != nil {
			continue // the namespace's last process exited
		}
		m, err := d.tcpExact(local, remote)
		d.Close()
		if err == nil {
			return m, nil
		}
	}
	return inetDiagMsg{}, fmt.Errorf("TCP socket %s→%s in any network namespace: %w", local, remote, ErrNotFound)
}

// otherNetns returns one process in each network namespace other than the agent's.
func otherNetns() ([]int, error) {
	var self unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		return nil, fmt.Errorf("reading the agent's network namespace: %w", err)
	}
	pids, err := Pids()
	if err != nil {
		return nil, err
	}
	type nsID struct{ dev, ino uint64 }
	seen := map[nsID]bool{{self.Dev, self.Ino}: true}
	var out []int
	for _, pid := range pids {
		var st unix.Stat_t
		if unix.Stat(procRoot+"/"+strconv.Itoa(pid)+"/ns/net", &st) != nil {
			continue
		}
		if id := (nsID{st.Dev, st.Ino}); !seen[id] {
			seen[id] = true
			out = append(out, pid)
		}
	}
	return out, nil
}

// UnixPeer returns the process at the other end of the Unix socket (by inode) that process
// pid holds: for a PostgreSQL backend's client socket, the client. Like TCPOwner it reads
// every fd on the host, once per connection.
func UnixPeer(pid int, inode uint64) (int, error) {
	d, err := openDiag(pid)
	if err != nil {
		return 0, err
	}
	m, err := d.unixExact(uint32(inode), udiagShowPeer)
	d.Close()
	if err != nil {
		return 0, err
	}
	if m.peer == 0 {
		return 0, fmt.Errorf("process %d: Unix socket %d is not connected: %w", pid, inode, ErrNotFound)
	}
	return Owner(uint64(m.peer))
}

// Owner returns the process holding the socket inode. When several hold it (a socket
// inherited across fork), the earliest started is returned: the one that opened it.
func Owner(inode uint64) (int, error) {
	owners, err := Owners(inode)
	if err != nil {
		return 0, err
	}
	pid, ok := owners[inode]
	if !ok {
		return 0, fmt.Errorf("no process holds socket %d: %w", inode, ErrNotFound)
	}
	return pid, nil
}

// Owners finds the processes holding any of the socket inodes in one pass over /proc/*/fd,
// so the agent resolves all connections that predate it with one scan, not one per
// connection. Inodes no process holds are absent from the result.
func Owners(inodes ...uint64) (map[uint64]int, error) {
	want := make(map[uint64]bool, len(inodes))
	for _, ino := range inodes {
		want[ino] = true
	}
	pids, err := Pids()
	if err != nil {
		return nil, err
	}
	out := make(map[uint64]int, len(inodes))
	start := make(map[int]uint64) // start times of holders, read only on a tie
	buf := make([]byte, 64)
	for _, pid := range pids {
		eachSocket(pid, buf, func(ino uint64) bool {
			if want[ino] {
				if prev, dup := out[ino]; !dup || startedBefore(pid, prev, start) {
					out[ino] = pid
				}
			}
			return true
		})
	}
	return out, nil
}

// eachSocket calls f with the inode of each socket process pid holds, until f returns
// false. A process that exited (or a kernel thread) has none.
func eachSocket(pid int, buf []byte, f func(ino uint64) bool) {
	d, err := os.Open(procRoot + "/" + strconv.Itoa(pid) + "/fd")
	if err != nil {
		return
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	for _, name := range names {
		if ino, ok := readSocketLink(int(d.Fd()), name, buf); ok && !f(ino) {
			return
		}
	}
}

// startedBefore reports whether process a started before b (pids wrap, so their order does
// not say). A process that vanished counts as later.
func startedBefore(a, b int, cache map[int]uint64) bool {
	t := func(pid int) uint64 {
		if v, ok := cache[pid]; ok {
			return v
		}
		v := ^uint64(0)
		if st, err := ReadStat(pid); err == nil {
			v = st.StartTime
		}
		cache[pid] = v
		return v
	}
	return t(a) < t(b)
}

// TCPListeners lists the listening TCP sockets in the agent's network namespace. The kernel
// walks only its listening hash for this.
func TCPListeners() ([]Socket, error) {
	d, err := openDiag(0)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	msgs, err := d.tcpDump(1 << tcpListen)
	if err != nil {
		return nil, err
	}
	out := make([]Socket, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, Socket{Inode: uint64(m.inode), Network: "tcp", Listening: true, Local: m.local})
	}
	return out, nil
}

// UnixPeerCred returns the credentials the kernel recorded for the client of a Unix socket
// when it connected (SO_PEERCRED), reading them through a duplicate of the server process's
// fd (pidfd_getfd). Unlike UnixPeer it scans nothing and answers even after the client has
// exited, so it suits short-lived clients (psql -c): the pid is the client's at connect time.
func UnixPeerCred(pid, fd int) (peerPID, peerUID int, err error) {
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(pfd)
	sfd, err := unix.PidfdGetfd(pfd, fd, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("pidfd_getfd %d/%d: %w", pid, fd, err)
	}
	defer unix.Close(sfd)
	cred, err := unix.GetsockoptUcred(sfd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return 0, 0, fmt.Errorf("SO_PEERCRED of %d/%d: %w", pid, fd, err)
	}
	if cred.Pid == 0 {
		return 0, 0, fmt.Errorf("socket %d of process %d has no peer credentials: %w", fd, pid, ErrNotFound)
	}
	return int(cred.Pid), int(cred.Uid), nil
}
