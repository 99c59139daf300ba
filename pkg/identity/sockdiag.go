package identity

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// This file speaks NETLINK_SOCK_DIAG directly through the netlink library's request
// plumbing. The library's own helpers do not fit: its SocketGet sends a dump (the kernel
// walks every socket and filters on ports only), its Unix helpers always dump every Unix
// socket on the host, and none can run in another network namespace. Here a TCP connection
// is looked up exactly by its four-tuple, a Unix socket exactly by inode, listeners by a
// state filter that makes the kernel walk only the listening hash, and the request runs in
// the network namespace of the process it is about, so servers in pods work too.

// Kernel constants from linux/tcp_states.h, linux/inet_diag.h and linux/unix_diag.h.
const (
	tcpEstablished = 1
	tcpSynSent     = 2
	tcpFinWait1    = 4
	tcpFinWait2    = 5
	tcpCloseWait   = 8
	tcpLastAck     = 9
	tcpListen      = 10
	tcpClosing     = 11

	// Connected TCP states that still have a socket inode (TIME_WAIT and SYN_RECV
	// mini-sockets have none, so no process can own them).
	tcpConnectedStates = 1<<tcpEstablished | 1<<tcpSynSent | 1<<tcpFinWait1 | 1<<tcpFinWait2 |
		1<<tcpCloseWait | 1<<tcpLastAck | 1<<tcpClosing

	udiagShowName = 0x01
	udiagShowPeer = 0x04

	unixDiagName = 0
	unixDiagPeer = 2

	sizeofInetDiagReq = 56
	sizeofInetDiagMsg = 72
	sizeofUnixDiagReq = 24
	sizeofUnixDiagMsg = 16

	noCookie = ^uint32(0)
)

// inetDiagReq is struct inet_diag_req_v2.
type inetDiagReq struct {
	family, protocol uint8
	states           uint32
	local, remote    netip.AddrPort
}

func (r *inetDiagReq) Len() int { return sizeofInetDiagReq }

func (r *inetDiagReq) Serialize() []byte {
	b := make([]byte, sizeofInetDiagReq)
	b[0], b[1] = r.family, r.protocol
	binary.NativeEndian.PutUint32(b[4:], r.states)
	// inet_diag_sockid: ports and addresses in network order.
	binary.BigEndian.PutUint16(b[8:], r.local.Port())
	binary.BigEndian.PutUint16(b[10:], r.remote.Port())
	putAddr(b[12:28], r.local.Addr())
	putAddr(b[28:44], r.remote.Addr())
	binary.NativeEndian.PutUint32(b[48:], noCookie)
	binary.NativeEndian.PutUint32(b[52:], noCookie)
	return b
}

func putAddr(dst []byte, a netip.Addr) {
	switch {
	case !a.IsValid():
	case a.Is4():
		v := a.As4()
		copy(dst, v[:])
	default:
		v := a.As16()
		copy(dst, v[:])
	}
}

// inetDiagMsg is the part of struct inet_diag_msg this package uses. Layout: family, state,
// timer, retrans; inet_diag_sockid at offset 4 (sport, dport, src[16], dst[16], if,
// cookie[2]); then expires, rqueue, wqueue, uid (offset 64) and inode (offset 68).
type inetDiagMsg struct {
	state         uint8
	local, remote netip.AddrPort
	uid, inode    uint32
}

func parseInetDiagMsg(b []byte) (inetDiagMsg, error) {
	if len(b) < sizeofInetDiagMsg {
		return inetDiagMsg{}, fmt.Errorf("inet_diag_msg of %d bytes, want %d", len(b), sizeofInetDiagMsg)
	}
	var src, dst netip.Addr
	if b[0] == unix.AF_INET {
		src, dst = netip.AddrFrom4([4]byte(b[8:12])), netip.AddrFrom4([4]byte(b[24:28]))
	} else {
		// Dual-stack sockets show IPv4 peers as ::ffff:a.b.c.d; report them as IPv4, the
		// way the peer itself and PostgreSQL's process title see them.
		src, dst = netip.AddrFrom16([16]byte(b[8:24])).Unmap(), netip.AddrFrom16([16]byte(b[24:40])).Unmap()
	}
	return inetDiagMsg{
		state:  b[1],
		local:  netip.AddrPortFrom(src, binary.BigEndian.Uint16(b[4:])),
		remote: netip.AddrPortFrom(dst, binary.BigEndian.Uint16(b[6:])),
		uid:    binary.NativeEndian.Uint32(b[64:]),
		inode:  binary.NativeEndian.Uint32(b[68:]),
	}, nil
}

// unixDiagReq is struct unix_diag_req.
type unixDiagReq struct {
	states uint32
	inode  uint32
	show   uint32
}

func (r *unixDiagReq) Len() int { return sizeofUnixDiagReq }

func (r *unixDiagReq) Serialize() []byte {
	b := make([]byte, sizeofUnixDiagReq)
	b[0] = unix.AF_UNIX
	binary.NativeEndian.PutUint32(b[4:], r.states)
	binary.NativeEndian.PutUint32(b[8:], r.inode)
	binary.NativeEndian.PutUint32(b[12:], r.show)
	binary.NativeEndian.PutUint32(b[16:], noCookie)
	binary.NativeEndian.PutUint32(b[20:], noCookie)
	return b
}

// unixDiagMsg is struct unix_diag_msg with the attributes this package asks for.
type unixDiagMsg struct {
	typ, state uint8
	inode      uint32
	name       string
	peer       uint32
}

func parseUnixDiagMsg(b []byte) (unixDiagMsg, error) {
	if len(b) < sizeofUnixDiagMsg {
		return unixDiagMsg{}, fmt.Errorf("unix_diag_msg of %d bytes, want %d", len(b), sizeofUnixDiagMsg)
	}
	m := unixDiagMsg{typ: b[1], state: b[2], inode: binary.NativeEndian.Uint32(b[4:])}
	// Attributes: {len u16, type u16, value}, each padded to 4 bytes. Walked here rather
	// than with nl.ParseRouteAttr, which panics on a truncated attribute.
	for rest := b[sizeofUnixDiagMsg:]; len(rest) >= 4; {
		n := int(binary.NativeEndian.Uint16(rest))
		if n < 4 || n > len(rest) {
			return unixDiagMsg{}, fmt.Errorf("unix_diag attribute of length %d in %d bytes", n, len(rest))
		}
		typ, v := binary.NativeEndian.Uint16(rest[2:]), rest[4:n]
		switch typ {
		case unixDiagName:
			m.name = unixName(v)
		case unixDiagPeer:
			if len(v) >= 4 {
				m.peer = binary.NativeEndian.Uint32(v)
			}
		}
		rest = rest[min((n+3)&^3, len(rest)):]
	}
	return m, nil
}

// unixName renders a sun_path: abstract names (leading NUL) as "@name", like ss and lsof.
func unixName(v []byte) string {
	if len(v) > 0 && v[0] == 0 {
		return "@" + string(v[1:])
	}
	for i, c := range v {
		if c == 0 {
			return string(v[:i])
		}
	}
	return string(v)
}

// diagConn sends sock_diag requests within one network namespace.
type diagConn struct {
	sock *nl.NetlinkSocket
}

// openDiag opens a sock_diag socket in the network namespace of pid (the agent's own when
// pid is 0 or shares it). Sockets are per namespace: a PostgreSQL in a pod is invisible to a
// query made from the host's namespace.
func openDiag(pid int) (*diagConn, error) {
	target, cur := netns.None(), netns.None()
	if pid != 0 {
		same, err := sameNetns(pid)
		if err != nil {
			return nil, err
		}
		if !same {
			if target, err = netns.GetFromPid(pid); err != nil {
				return nil, procErr(pid, err)
			}
			defer target.Close()
			if cur, err = netns.Get(); err != nil {
				return nil, fmt.Errorf("opening the agent's network namespace: %w", err)
			}
			defer cur.Close()
		}
	}
	s, err := nl.GetNetlinkSocketAt(target, cur, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("opening a sock_diag socket for process %d: %w", pid, err)
	}
	if err := s.SetReceiveTimeout(&nl.SocketTimeoutTv); err != nil {
		s.Close()
		return nil, fmt.Errorf("setting the sock_diag timeout: %w", err)
	}
	return &diagConn{sock: s}, nil
}

func (d *diagConn) Close() { d.sock.Close() }

// execute sends one request and returns the reply messages; a dump when dump is set, else
// an exact lookup, whose "no such socket" (ENOENT) becomes ErrNotFound.
func (d *diagConn) execute(data nl.NetlinkRequestData, dump bool) ([][]byte, error) {
	flags := 0
	if dump {
		flags = unix.NLM_F_DUMP
	}
	req := nl.NewNetlinkRequest(nl.SOCK_DIAG_BY_FAMILY, flags)
	req.AddData(data)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_SOCK_DIAG: {Socket: d.sock}}
	msgs, err := req.Execute(unix.NETLINK_SOCK_DIAG, nl.SOCK_DIAG_BY_FAMILY)
	if errors.Is(err, syscall.ENOENT) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	return msgs, nil
}

// tcpExact looks one TCP socket up by its own (local) and peer (remote) address. The kernel
// answers from its connection hash in O(1), not by walking sockets.
func (d *diagConn) tcpExact(local, remote netip.AddrPort) (inetDiagMsg, error) {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	family := uint8(unix.AF_INET6)
	if local.Addr().Is4() && remote.Addr().Is4() {
		family = unix.AF_INET
	} else if local.Addr().Is4() != remote.Addr().Is4() {
		// A v4-mapped pair: the kernel finds dual-stack sockets by their IPv4 four-tuple.
		return inetDiagMsg{}, fmt.Errorf("TCP lookup of %s→%s: mixed address families", local, remote)
	}
	msgs, err := d.execute(&inetDiagReq{family: family, protocol: unix.IPPROTO_TCP, states: ^uint32(0), local: local, remote: remote}, false)
	if err != nil {
		return inetDiagMsg{}, fmt.Errorf("TCP lookup of %s→%s: %w", local, remote, err)
	}
	for _, b := range msgs {
		m, err := parseInetDiagMsg(b)
		if err != nil {
			return inetDiagMsg{}, err
		}
		// With no established match the kernel falls back to a listener on the local port;
		// that is not the connection asked for.
		if m.remote == remote && m.local == local {
			return m, nil
		}
	}
	return inetDiagMsg{}, fmt.Errorf("TCP lookup of %s→%s: %w", local, remote, ErrNotFound)
}

// tcpDump lists TCP sockets (IPv4 and IPv6) in the given states.
func (d *diagConn) tcpDump(states uint32) ([]inetDiagMsg, error) {
	var out []inetDiagMsg
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		msgs, err := d.execute(&inetDiagReq{family: family, protocol: unix.IPPROTO_TCP, states: states}, true)
		if err != nil {
			return nil, fmt.Errorf("listing TCP sockets: %w", err)
		}
		for _, b := range msgs {
			m, err := parseInetDiagMsg(b)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
		}
	}
	return out, nil
}

// unixExact looks one Unix socket up by inode.
func (d *diagConn) unixExact(inode uint32, show uint32) (unixDiagMsg, error) {
	msgs, err := d.execute(&unixDiagReq{states: ^uint32(0), inode: inode, show: show}, false)
	if err != nil {
		return unixDiagMsg{}, fmt.Errorf("lookup of Unix socket inode %d: %w", inode, err)
	}
	if len(msgs) == 0 {
		return unixDiagMsg{}, fmt.Errorf("lookup of Unix socket inode %d: %w", inode, ErrNotFound)
	}
	return parseUnixDiagMsg(msgs[0])
}

// sameNetns reports whether pid shares the agent's network namespace.
func sameNetns(pid int) (bool, error) {
	var self, other unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		return false, fmt.Errorf("reading the agent's network namespace: %w", err)
	}
	if err := unix.Stat(procRoot+"/"+strconv.Itoa(pid)+"/ns/net", &other); err != nil {
		return false, procErr(pid, os.NewSyscallError("stat", err))
	}
	return self.Dev == other.Dev && self.Ino == other.Ino, nil
}
