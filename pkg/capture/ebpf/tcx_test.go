package ebpf

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/internal/testpg"
)

// The TCX program's packet parser, run by the kernel on hand-built packets
// (BPF_PROG_TEST_RUN): the branches that traffic over 127.0.0.1 never takes — IPv6, IP
// options, fragments, BIG TCP, bad lengths — each with the records and loss counts it
// must produce.

const watchedPort = 5432

// pkt describes a test packet; build lays it out behind an Ethernet header.
type pkt struct {
	v6       bool
	ipOpts   []byte // IPv4 options (a multiple of 4 bytes)
	proto    uint8  // default TCP
	fragment bool   // IPv4: a non-first fragment
	zeroLen  bool   // BIG TCP: tot_len / payload_len 0
	lenDelta int    // added to the IP length field (a negative one claims less, positive more)
	sport    uint16
	dport    uint16
	seq      uint32
	flags    uint8 // TCP flags: FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10
	payload  string
}

var (
	src4 = netip.MustParseAddr("10.1.2.3")
	dst4 = netip.MustParseAddr("10.9.8.7")
	src6 = netip.MustParseAddr("fd00::1")
	dst6 = netip.MustParseAddr("fd00::2")
)

func (p pkt) build() []byte {
	proto := p.proto
	if proto == 0 {
		proto = 6
	}
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], p.sport)
	binary.BigEndian.PutUint16(tcp[2:], p.dport)
	binary.BigEndian.PutUint32(tcp[4:], p.seq)
	tcp[12] = 5 << 4
	tcp[13] = p.flags
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	l4 := append(tcp, p.payload...)

	var b []byte
	b = append(b, make([]byte, 12)...) // MAC addresses
	if p.v6 {
		b = binary.BigEndian.AppendUint16(b, 0x86dd)
		ip := make([]byte, 40)
		ip[0] = 6 << 4
		n := len(l4) + p.lenDelta
		if p.zeroLen {
			n = 0
		}
		binary.BigEndian.PutUint16(ip[4:], uint16(n))
		ip[6] = proto
		ip[7] = 64
		s, d := src6.As16(), dst6.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		b = append(b, ip...)
	} else {
		b = binary.BigEndian.AppendUint16(b, 0x0800)
		ip := make([]byte, 20+len(p.ipOpts))
		ip[0] = 4<<4 | byte(len(ip)/4)
		n := len(ip) + len(l4) + p.lenDelta
		if p.zeroLen {
			n = 0
		}
		binary.BigEndian.PutUint16(ip[2:], uint16(n))
		if p.fragment {
			binary.BigEndian.PutUint16(ip[6:], 185) // fragment offset 185 × 8 bytes
		}
		ip[8] = 64
		ip[9] = proto
		s, d := src4.As4(), dst4.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		copy(ip[20:], p.ipOpts)
		b = append(b, ip...)
	}
	return append(b, l4...)
}

// tcxProg is the TCX program loaded on its own, with its ring buffer and loss counters.
type tcxProg struct {
	objs   bpfObjects
	reader *ringbuf.Reader
}

func loadTCX(t *testing.T) *tcxProg {
	t.Helper()
	testenv.RequireBPF(t)
	spec, err := loadBpf()
	if err != nil {
		t.Fatal(err)
	}
	spec.Maps[bpfMapEvents].MaxEntries = 1 << 20
	p := &tcxProg{}
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		t.Fatalf("loading the BPF objects: %v", err)
	}
	t.Cleanup(func() { p.objs.Close() })
	if p.reader, err = ringbuf.NewReader(p.objs.Events); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.reader.Close() })
	if err := p.objs.WatchedPorts.Put(uint32(watchedPort), uint8(1)); err != nil {
		t.Fatal(err)
	}
	return p
}

// run feeds one packet to the program and returns the segments it wrote to the ring and
// the loss it counted.
func (p *tcxProg) run(t *testing.T, packet []byte) (segs []Segment, lostRecords, lostBytes uint64) {
	t.Helper()
	before := p.lost(t)
	ret, err := p.objs.CaptureTcx.Run(&ebpf.RunOptions{Data: packet})
	if err != nil {
		t.Fatalf("running capture_tcx: %v", err)
	}
	if int32(ret) != -1 { // TCX_NEXT: capture never changes what happens to a packet
		t.Errorf("capture_tcx returned %d, want TCX_NEXT (-1)", int32(ret))
	}
	segs = p.drain(t)
	after := p.lost(t)
	return segs, after[0] - before[0], after[1] - before[1]
}

// drain returns the segments in the ring.
func (p *tcxProg) drain(t *testing.T) []Segment {
	t.Helper()
	col := &collector{}
	dec := decoder{h: col}
	p.reader.SetDeadline(time.Unix(1, 0))
	for {
		rec, err := p.reader.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("reading the ring: %v", err)
		}
		if _, _, err := dec.decode(rec.RawSample); err != nil {
			t.Fatalf("decoding a ring record: %v", err)
		}
	}
	return col.segs
}

func (p *tcxProg) lost(t *testing.T) [2]uint64 {
	var cpus []bpfLostStats
	if err := p.objs.Lost.Lookup(uint32(bpfHookIdHOOK_TCX), &cpus); err != nil {
		t.Fatalf("reading the loss counters: %v", err)
	}
	var s [2]uint64
	for _, c := range cpus {
		s[0] += c.Records
		s[1] += c.Bytes
	}
	return s
}

func TestTCXPacketParser(t *testing.T) {
	p := loadTCX(t)
	const q = "Q\x00\x00\x00\x0dSELECT 1;\x00"
	seg := func(v6 bool, sport, dport uint16, seq uint32, payload string) Segment {
		s, d := src4, dst4
		if v6 {
			s, d = src6, dst6
		}
		return Segment{Src: netip.AddrPortFrom(s, sport), Dst: netip.AddrPortFrom(d, dport), Seq: seq, Payload: []byte(payload)}
	}
	nop4 := []byte{1, 1, 1, 1} // four IPv4 NOP options
	for _, tc := range []struct {
		name        string
		pkt         pkt
		want        []Segment
		lostRecords uint64
		lostBytes   uint64
	}{
		{name: "IPv4 to the server", pkt: pkt{sport: 40000, dport: watchedPort, seq: 100, flags: 0x18, payload: q},
			want: []Segment{seg(false, 40000, watchedPort, 100, q)}},
		{name: "IPv4 from the server", pkt: pkt{sport: watchedPort, dport: 40000, seq: 7, flags: 0x18, payload: "Z\x00\x00\x00\x05I"},
			want: []Segment{seg(false, watchedPort, 40000, 7, "Z\x00\x00\x00\x05I")}},
		{name: "IPv4 unwatched ports", pkt: pkt{sport: 40000, dport: 80, flags: 0x18, payload: q}},
		// With options, the ports are not where a 20-byte header puts them: the program
		// must find them past the options, and the payload past both.
		{name: "IPv4 with options", pkt: pkt{ipOpts: nop4, sport: 40000, dport: watchedPort, seq: 5, flags: 0x18, payload: q},
			want: []Segment{seg(false, 40000, watchedPort, 5, q)}},
		{name: "IPv4 with options, unwatched", pkt: pkt{ipOpts: nop4, sport: 40000, dport: 80, flags: 0x18, payload: q}},
		{name: "IPv4 forty bytes of options", pkt: pkt{ipOpts: append(append(nop4, nop4...), make([]byte, 32)...), sport: 40000, dport: watchedPort, seq: 9, flags: 0x18, payload: q},
			want: []Segment{seg(false, 40000, watchedPort, 9, q)}},
		{name: "IPv4 non-first fragment", pkt: pkt{fragment: true, sport: 40000, dport: watchedPort, flags: 0x18, payload: q}},
		{name: "IPv4 UDP", pkt: pkt{proto: 17, sport: 40000, dport: watchedPort, payload: q}},
		{name: "IPv6 to the server", pkt: pkt{v6: true, sport: 40001, dport: watchedPort, seq: 1 << 31, flags: 0x18, payload: q},
			want: []Segment{seg(true, 40001, watchedPort, 1<<31, q)}},
		{name: "IPv6 unwatched ports", pkt: pkt{v6: true, sport: 40001, dport: 443, flags: 0x18, payload: q}},
		{name: "IPv6 UDP", pkt: pkt{v6: true, proto: 17, sport: 40001, dport: watchedPort, payload: q}},
		{name: "SYN without payload", pkt: pkt{sport: 40000, dport: watchedPort, seq: 99, flags: 0x02},
			want: []Segment{{Src: netip.AddrPortFrom(src4, 40000), Dst: netip.AddrPortFrom(dst4, watchedPort), Seq: 99, SYN: true}}},
		{name: "IPv6 FIN without payload", pkt: pkt{v6: true, sport: watchedPort, dport: 40001, seq: 3, flags: 0x11},
			want: []Segment{{Src: netip.AddrPortFrom(src6, watchedPort), Dst: netip.AddrPortFrom(dst6, 40001), Seq: 3, FIN: true}}},
		{name: "RST with payload", pkt: pkt{sport: 40000, dport: watchedPort, seq: 4, flags: 0x04, payload: "X"},
			want: []Segment{{Src: netip.AddrPortFrom(src4, 40000), Dst: netip.AddrPortFrom(dst4, watchedPort), Seq: 4, RST: true, Payload: []byte("X")}}},
		{name: "pure ACK", pkt: pkt{sport: 40000, dport: watchedPort, flags: 0x10}},
		// Ethernet pads short frames: the IP length, not the frame, says where the
		// payload ends.
		{name: "IPv4 frame padding", pkt: pkt{sport: 40000, dport: watchedPort, seq: 1, flags: 0x18, payload: q + "\x00\x00\x00\x00", lenDelta: -4},
			want: []Segment{seg(false, 40000, watchedPort, 1, q)}},
		// BIG TCP (GSO packets over 64 KiB) zeroes the IP length field: where the payload
		// ends cannot be told, so the packet is counted lost rather than guessed at.
		{name: "IPv4 BIG TCP", pkt: pkt{zeroLen: true, sport: 40000, dport: watchedPort, flags: 0x18, payload: q},
			lostRecords: 1, lostBytes: uint64(14 + 20 + 20 + len(q))},
		{name: "IPv6 BIG TCP", pkt: pkt{v6: true, zeroLen: true, sport: 40001, dport: watchedPort, flags: 0x18, payload: q},
			lostRecords: 1, lostBytes: uint64(14 + 40 + 20 + len(q))},
		// A length field claiming bytes the packet does not have: the read fails, and the
		// claimed payload is counted lost.
		{name: "IPv4 length beyond the packet", pkt: pkt{sport: 40000, dport: watchedPort, flags: 0x18, payload: q, lenDelta: 100},
			lostRecords: 1, lostBytes: uint64(len(q) + 100)},
		{name: "IPv6 length beyond the packet", pkt: pkt{v6: true, sport: 40001, dport: watchedPort, flags: 0x18, payload: q, lenDelta: 100},
			lostRecords: 1, lostBytes: uint64(len(q) + 100)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			segs, lr, lb := p.run(t, tc.pkt.build())
			if len(segs) != len(tc.want) {
				t.Fatalf("%d segments, want %d: %+v", len(segs), len(tc.want), segs)
			}
			for i, got := range segs {
				w := tc.want[i]
				if got.Src != w.Src || got.Dst != w.Dst || got.Seq != w.Seq || string(got.Payload) != string(w.Payload) ||
					got.SYN != w.SYN || got.FIN != w.FIN || got.RST != w.RST {
					t.Errorf("segment %d:\n got %v→%v seq %d syn=%v fin=%v rst=%v %q\nwant %v→%v seq %d syn=%v fin=%v rst=%v %q", i,
						got.Src, got.Dst, got.Seq, got.SYN, got.FIN, got.RST, got.Payload,
						w.Src, w.Dst, w.Seq, w.SYN, w.FIN, w.RST, w.Payload)
				}
			}
			if lr != tc.lostRecords || lb != tc.lostBytes {
				t.Errorf("loss counted: %d records, %d bytes; want %d, %d", lr, lb, tc.lostRecords, tc.lostBytes)
			}
		})
	}
}

// TestTCXOnL3Device runs the program where packets have no link-layer header (tun, as
// WireGuard and other tunnels deliver them): the payload offset must not assume Ethernet.
// BPF_PROG_TEST_RUN always frames a tc program's packet as Ethernet, so this takes a real
// tun device, with packets written into it as if they had arrived.
func TestTCXOnL3Device(t *testing.T) {
	p := loadTCX(t)
	name := "vgtun" + marker(t)[7:12]
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("opening /dev/net/tun: %v", err)
	}
	defer unix.Close(fd) // the device is not persistent: closing it deletes the device
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		t.Fatal(err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		t.Fatalf("creating tun device %s: %v", name, err)
	}
	lnk, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lnk); err != nil {
		t.Fatalf("bringing %s up: %v", name, err)
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: lnk.Attrs().Index, Program: p.objs.CaptureTcx, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		t.Fatalf("attaching TCX to %s: %v", name, err)
	}
	defer l.Close()

	const q = "Q\x00\x00\x00\x0dSELECT 2;\x00"
	for _, v6 := range []bool{false, true} {
		frame := pkt{v6: v6, sport: 40002, dport: watchedPort, seq: 77, flags: 0x18, payload: q}.build()
		before := p.lost(t)
		if _, err := unix.Write(fd, frame[14:]); err != nil { // no Ethernet header on a tun
			t.Fatalf("writing into %s: %v", name, err)
		}
		var segs []Segment
		deadline := time.Now().Add(2 * time.Second)
		for len(segs) == 0 && time.Now().Before(deadline) {
			segs = p.drain(t)
			time.Sleep(10 * time.Millisecond)
		}
		if len(segs) != 1 || string(segs[0].Payload) != q || segs[0].Seq != 77 || segs[0].Dst.Port() != watchedPort {
			t.Errorf("v6=%v: segments %+v, want one with the query at seq 77", v6, segs)
		}
		if after := p.lost(t); after != before {
			t.Errorf("v6=%v: loss counted (%v → %v) for a packet that was captured", v6, before, after)
		}
	}
}

// TestPlaintextTCPOverIPv6 captures a statement and its result over ::1 end to end.
func TestPlaintextTCPOverIPv6(t *testing.T) {
	testenv.RequireBPF(t)
	srv := testpg.Start(t, testpg.Options{Config: []string{"listen_addresses = '127.0.0.1,::1'"}})
	hba, err := os.OpenFile(filepath.Join(srv.Dir, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = hba.WriteString("host all all ::1/128 trust\n")
	hba.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Psql("postgres", "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	tr, err := Load(Config{ServerPorts: []uint16{uint16(srv.Port)}}, col, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	defer tr.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	m := marker(t)
	query(t, fmt.Sprintf("postgres://postgres@[::1]:%d/postgres?sslmode=disable", srv.Port), "SELECT '"+m+"'")
	server := netip.AddrPortFrom(netip.IPv6Loopback(), uint16(srv.Port))
	waitFor(t, "the marker in both directions over ::1", func() bool {
		col.mu.Lock()
		defer col.mu.Unlock()
		var toServer, toClient bool
		for _, s := range col.segs {
			if bytes.Contains(s.Payload, []byte(m)) {
				toServer = toServer || (s.Dst == server && s.Src.Addr() == netip.IPv6Loopback())
				toClient = toClient || (s.Src == server && s.Dst.Addr() == netip.IPv6Loopback())
			}
		}
		return toServer && toClient
	})
	if st := tr.Stats(); st.TCX.LostRecords != 0 || st.Malformed != 0 {
		t.Errorf("lost or malformed records: %+v", st)
	}
}
