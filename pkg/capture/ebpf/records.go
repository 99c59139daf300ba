package ebpf

import (
	"bytes"
	"fmt"
	"net/netip"
	"unsafe"
)

// Handler receives decoded records on the goroutine running Tracer.Run, in ring order.
//
// The records and every slice in them are valid only during the call: they point into a
// buffer the next record overwrites. Copy what you keep.
type Handler interface {
	// Segment is a TCP payload chunk to or from a watched port, or a SYN/FIN/RST without
	// payload.
	Segment(s *Segment)
	// TLS is plaintext a PostgreSQL server read from or wrote to a TLS connection.
	TLS(d *ProcData)
	// TLSSocket names the TCP connection under a server process's new TLS stream; it comes
	// before the stream's first TLS record.
	TLSSocket(s *TLSSocket)
	// Unix is data a watched server process read from or wrote to a Unix stream socket.
	Unix(d *ProcData)
	// Connect reports a connection to a watched port opened by a local process, or the
	// close of a watched flow.
	Connect(c *ConnEvent)
	// UnixConnect reports a local process connecting to a PostgreSQL Unix socket (any
	// server's: the port is not filtered in the kernel).
	UnixConnect(u *UnixConnect)
	// Idle is called when the reader has drained the ring and waited PollInterval without
	// a wakeup: work that must happen on time even when no record comes goes here.
	Idle()
}

// Segment is TCP payload seen by TCX. A packet larger than one record (GSO packets reach
// 64 KiB) arrives as consecutive Segments whose Seq values continue each other. SYN is set
// on the first chunk of a SYN packet, FIN and RST on the last chunk of their packet. Both
// directions of a loopback connection are seen once (lo ingress); on other interfaces a
// flow crossing several of them (veth, bridge, uplink) is seen once per interface — use
// Ifindex to keep one.
type Segment struct {
	Src, Dst      netip.AddrPort
	Seq           uint32 // TCP sequence number of Payload[0] (of the flag for empty segments)
	SYN, FIN, RST bool
	Payload       []byte
	Ifindex       uint32
	Ktime         uint64 // CLOCK_MONOTONIC ns; see KtimeToTime
}

// ProcData is data a server process read or wrote. PID is the process (tgid), TID the
// thread. A stream is (PID, FD, Write); Offset is the position of Data[0] in it, counted
// from when the kernel first saw the stream: a jump forward means bytes were lost, a value
// below the expected one means the stream restarted (fd reused, capture re-enabled).
type ProcData struct {
	PID, TID uint32
	FD       int32
	// Peer is, for Unix data, the client process (tgid) on the other end of the socket as
	// the kernel recorded it at connect (SO_PEERCRED, still known after the client exits);
	// 0 for TLS or when unknown.
	Peer   uint32
	Write  bool // true: the server wrote (server → client); false: it read
	Offset uint64
	Data   []byte
	Ktime  uint64
}

// TLSSocket is the TCP connection a server process (PID, a tgid) serves TLS on, read by the
// kernel from the process's own fd table when its TLS stream started: unlike /proc, it is
// still known once the process has exited.
type TLSSocket struct {
	Client, Server netip.AddrPort
	PID            uint32
	FD             int32
	Ktime          uint64
}

// ConnEvent is a connection to a watched server port, oriented client → server. For an
// open (Closed false) the process fields name the local client that called connect; on
// close they are zero, because the kernel closes sockets on behalf of nobody in particular.
type ConnEvent struct {
	Src, Dst  netip.AddrPort
	PID, TGID uint32 // PID is the thread, TGID the process
	UID       uint32
	Comm      string
	CgroupID  uint64
	Closed    bool
	Ktime     uint64
}

// UnixConnect is a connect() to a Unix socket named like PostgreSQL's (".s.PGSQL.<port>"),
// seen in the client's context before the server accepted it. Path is as the client named
// it, in its own mount namespace; an abstract socket's path starts with "@".
type UnixConnect struct {
	Port      uint16 // from the socket's file name
	Path      string
	PID, TGID uint32 // PID is the thread, TGID the process
	UID       uint32
	Comm      string
	CgroupID  uint64
	Ktime     uint64
}

const (
	afInet  = 2
	afInet6 = 10

	segHdrSize  = int(unsafe.Sizeof(bpfSegHdr{}))
	procHdrSize = int(unsafe.Sizeof(bpfProcHdr{}))
	connRecSize = int(unsafe.Sizeof(bpfConnRec{}))
	unixRecSize = int(unsafe.Sizeof(bpfUnixConnectRec{}))
	sockRecSize = int(unsafe.Sizeof(bpfTlsSockRec{}))
)

// decoder turns raw ring records into Handler calls. Its records are reused across calls,
// which is why the Handler must not keep them.
type decoder struct {
	h    Handler
	seg  Segment
	proc ProcData
	conn ConnEvent
	unix UnixConnect
	sock TLSSocket
}

// decode dispatches one ring record to the handler. It returns the hook the record belongs
// to and its payload size, or an error for a record it cannot read.
func (d *decoder) decode(raw []byte) (hook bpfHookId, payload int, err error) {
	if len(raw) == 0 {
		return 0, 0, fmt.Errorf("empty record")
	}
	switch bpfRecKind(raw[0]) {
	case bpfRecKindREC_SEGMENT:
		if len(raw) < segHdrSize {
			return bpfHookIdHOOK_TCX, 0, fmt.Errorf("segment record of %d bytes, shorter than its %d-byte header", len(raw), segHdrSize)
		}
		h := (*bpfSegHdr)(unsafe.Pointer(&raw[0]))
		if int(h.Len) > len(raw)-segHdrSize {
			return bpfHookIdHOOK_TCX, 0, fmt.Errorf("segment record claims %d payload bytes, has %d", h.Len, len(raw)-segHdrSize)
		}
		src, err := addrPort(h.Family, &h.Saddr, h.Sport)
		if err != nil {
			return bpfHookIdHOOK_TCX, 0, err
		}
		dst, _ := addrPort(h.Family, &h.Daddr, h.Dport)
		d.seg = Segment{
			Src: src, Dst: dst, Seq: h.Seq,
			SYN: h.Flags&uint8(bpfSegFlagsSEG_SYN) != 0, FIN: h.Flags&uint8(bpfSegFlagsSEG_FIN) != 0, RST: h.Flags&uint8(bpfSegFlagsSEG_RST) != 0,
			Payload: raw[segHdrSize : segHdrSize+int(h.Len) : segHdrSize+int(h.Len)],
			Ifindex: h.Ifindex, Ktime: h.Ktime,
		}
		d.h.Segment(&d.seg)
		return bpfHookIdHOOK_TCX, int(h.Len), nil

	case bpfRecKindREC_TLS, bpfRecKindREC_UNIX:
		hook := bpfHookIdHOOK_TLS
		if bpfRecKind(raw[0]) == bpfRecKindREC_UNIX {
			hook = bpfHookIdHOOK_UNIX
		}
		if len(raw) < procHdrSize {
			return hook, 0, fmt.Errorf("process data record of %d bytes, shorter than its %d-byte header", len(raw), procHdrSize)
		}
		h := (*bpfProcHdr)(unsafe.Pointer(&raw[0]))
		if int(h.Len) > len(raw)-procHdrSize {
			return hook, 0, fmt.Errorf("process data record claims %d payload bytes, has %d", h.Len, len(raw)-procHdrSize)
		}
		d.proc = ProcData{
			PID: h.Pid, TID: h.Tid, FD: h.Fd, Peer: h.Peer, Write: h.Write != 0, Offset: h.Offset,
			Data:  raw[procHdrSize : procHdrSize+int(h.Len) : procHdrSize+int(h.Len)],
			Ktime: h.Ktime,
		}
		if hook == bpfHookIdHOOK_TLS {
			d.h.TLS(&d.proc)
		} else {
			d.h.Unix(&d.proc)
		}
		return hook, int(h.Len), nil

	case bpfRecKindREC_TLS_SOCK:
		if len(raw) < sockRecSize {
			return bpfHookIdHOOK_TLS, 0, fmt.Errorf("TLS socket record of %d bytes, want %d", len(raw), sockRecSize)
		}
		r := (*bpfTlsSockRec)(unsafe.Pointer(&raw[0]))
		client, err := addrPort(r.Family, &r.Saddr, r.Sport)
		if err != nil {
			return bpfHookIdHOOK_TLS, 0, err
		}
		server, _ := addrPort(r.Family, &r.Daddr, r.Dport)
		d.sock = TLSSocket{Client: client, Server: server, PID: r.Pid, FD: r.Fd, Ktime: r.Ktime}
		d.h.TLSSocket(&d.sock)
		return bpfHookIdHOOK_TLS, 0, nil

	case bpfRecKindREC_CONN:
		if len(raw) < connRecSize {
			return bpfHookIdHOOK_CONN, 0, fmt.Errorf("connection record of %d bytes, want %d", len(raw), connRecSize)
		}
		r := (*bpfConnRec)(unsafe.Pointer(&raw[0]))
		src, err := addrPort(r.Family, &r.Saddr, r.Sport)
		if err != nil {
			return bpfHookIdHOOK_CONN, 0, err
		}
		dst, _ := addrPort(r.Family, &r.Daddr, r.Dport)
		d.conn = ConnEvent{
			Src: src, Dst: dst, PID: r.Pid, TGID: r.Tgid, UID: r.Uid, Comm: cString(r.Comm[:]),
			CgroupID: r.CgroupId, Closed: r.Closed != 0, Ktime: r.Ktime,
		}
		d.h.Connect(&d.conn)
		return bpfHookIdHOOK_CONN, 0, nil

	case bpfRecKindREC_UNIX_CONNECT:
		if len(raw) < unixRecSize {
			return bpfHookIdHOOK_UNIX_CONNECT, 0, fmt.Errorf("connect_unix record of %d bytes, want %d", len(raw), unixRecSize)
		}
		r := (*bpfUnixConnectRec)(unsafe.Pointer(&raw[0]))
		if int(r.PathLen) > len(r.Path) {
			return bpfHookIdHOOK_UNIX_CONNECT, 0, fmt.Errorf("connect_unix record claims a %d-byte path", r.PathLen)
		}
		path := string(unsafe.Slice((*byte)(unsafe.Pointer(&r.Path[0])), r.PathLen))
		if path != "" && path[0] == 0 {
			path = "@" + path[1:] // abstract namespace, written as ss and PostgreSQL do
		}
		d.unix = UnixConnect{
			Port: r.Port, Path: path, PID: r.Pid, TGID: r.Tgid, UID: r.Uid, Comm: cString(r.Comm[:]),
			CgroupID: r.CgroupId, Ktime: r.Ktime,
		}
		d.h.UnixConnect(&d.unix)
		return bpfHookIdHOOK_UNIX_CONNECT, 0, nil
	}
	return 0, 0, fmt.Errorf("unknown record kind %d (%d bytes)", raw[0], len(raw))
}

// cString is a kernel char array up to its first NUL.
func cString(a []int8) string {
	b := unsafe.Slice((*byte)(unsafe.Pointer(&a[0])), len(a))
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func addrPort(family uint8, addr *[16]uint8, port uint16) (netip.AddrPort, error) {
	switch family {
	case afInet:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(addr[:4])), port), nil
	case afInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(*addr), port), nil
	}
	return netip.AddrPort{}, fmt.Errorf("unknown address family %d", family)
}
