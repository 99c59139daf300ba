package ebpf

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"reflect"
	"strings"
	"testing"
)

// recorder is a Handler that remembers the last call, copying what the decoder reuses.
type recorder struct {
	calls []any
}

func (r *recorder) Segment(s *Segment) {
	c := *s
	c.Payload = bytes.Clone(s.Payload)
	r.calls = append(r.calls, c)
}
func (r *recorder) TLS(d *ProcData) {
	c := *d
	c.Data = bytes.Clone(d.Data)
	r.calls = append(r.calls, "tls", c)
}
func (r *recorder) Unix(d *ProcData) {
	c := *d
	c.Data = bytes.Clone(d.Data)
	r.calls = append(r.calls, "unix", c)
}
func (r *recorder) Connect(c *ConnEvent)   { r.calls = append(r.calls, *c) }
func (r *recorder) TLSSocket(k *TLSSocket) { r.calls = append(r.calls, *k) }

func (r *recorder) UnixConnect(u *UnixConnect) { r.calls = append(r.calls, *u) }
func (r *recorder) Idle()                      {}

// raw lays out a record as the kernel does: the header struct in host byte order (little
// endian on every target we build for), then the payload.
func path128(s string) (p [128]int8) {
	for i, c := range []byte(s) {
		p[i] = int8(c)
	}
	return p
}

func raw(t *testing.T, hdr any, payload string) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := binary.Write(&b, binary.LittleEndian, hdr); err != nil {
		t.Fatal(err)
	}
	return append(b.Bytes(), payload...)
}

func addr16(s string) [16]uint8 {
	var a [16]uint8
	ip := netip.MustParseAddr(s)
	if ip.Is4() {
		v := ip.As4()
		copy(a[:], v[:])
	} else {
		a = ip.As16()
	}
	return a
}

func TestDecode(t *testing.T) {
	comm := [16]int8{}
	for i, c := range "psql" {
		comm[i] = int8(c)
	}
	tests := []struct {
		name    string
		rec     []byte
		want    []any
		hook    bpfHookId
		n       int
		wantErr string
	}{
		{
			name: "IPv4 segment with payload and FIN",
			rec: raw(t, bpfSegHdr{Kind: uint8(bpfRecKindREC_SEGMENT), Flags: uint8(bpfSegFlagsSEG_FIN), Family: afInet, Sport: 40000, Dport: 5432,
				Seq: 4294967290, Ifindex: 1, Len: 5, Ktime: 7, Saddr: addr16("10.0.0.1"), Daddr: addr16("10.0.0.2")}, "Q\x00\x00\x00\x04"),
			want: []any{Segment{Src: netip.MustParseAddrPort("10.0.0.1:40000"), Dst: netip.MustParseAddrPort("10.0.0.2:5432"),
				Seq: 4294967290, FIN: true, Payload: []byte("Q\x00\x00\x00\x04"), Ifindex: 1, Ktime: 7}},
			hook: bpfHookIdHOOK_TCX, n: 5,
		},
		{
			name: "IPv6 SYN without payload",
			rec: raw(t, bpfSegHdr{Kind: uint8(bpfRecKindREC_SEGMENT), Flags: uint8(bpfSegFlagsSEG_SYN), Family: afInet6, Sport: 5432, Dport: 40000,
				Seq: 1, Saddr: addr16("fd00::1"), Daddr: addr16("fd00::2")}, ""),
			want: []any{Segment{Src: netip.MustParseAddrPort("[fd00::1]:5432"), Dst: netip.MustParseAddrPort("[fd00::2]:40000"), Seq: 1, SYN: true, Payload: []byte{}}},
			hook: bpfHookIdHOOK_TCX,
		},
		{
			name: "TLS write",
			rec:  raw(t, bpfProcHdr{Kind: uint8(bpfRecKindREC_TLS), Write: 1, Len: 3, Pid: 10, Tid: 11, Fd: 9, Offset: 1 << 40, Ktime: 5}, "abc"),
			want: []any{"tls", ProcData{PID: 10, TID: 11, FD: 9, Write: true, Offset: 1 << 40, Data: []byte("abc"), Ktime: 5}},
			hook: bpfHookIdHOOK_TLS, n: 3,
		},
		{
			name: "Unix read",
			rec:  raw(t, bpfProcHdr{Kind: uint8(bpfRecKindREC_UNIX), Len: 2, Pid: 10, Tid: 10, Fd: 7}, "xy"),
			want: []any{"unix", ProcData{PID: 10, TID: 10, FD: 7, Data: []byte("xy")}},
			hook: bpfHookIdHOOK_UNIX, n: 2,
		},
		{
			name: "connection",
			rec: raw(t, bpfConnRec{Kind: uint8(bpfRecKindREC_CONN), Family: afInet, Sport: 40000, Dport: 5432, Pid: 3, Tgid: 2, Uid: 1000,
				CgroupId: 99, Ktime: 4, Saddr: addr16("127.0.0.1"), Daddr: addr16("127.0.0.1"), Comm: comm}, ""),
			want: []any{ConnEvent{Src: netip.MustParseAddrPort("127.0.0.1:40000"), Dst: netip.MustParseAddrPort("127.0.0.1:5432"),
				PID: 3, TGID: 2, UID: 1000, Comm: "psql", CgroupID: 99, Ktime: 4}},
			hook: bpfHookIdHOOK_CONN,
		},
		{
			name: "TLS socket, IPv6",
			rec: raw(t, bpfTlsSockRec{Kind: uint8(bpfRecKindREC_TLS_SOCK), Family: afInet6, Sport: 40000, Dport: 5432, Pid: 10, Fd: 9,
				Ktime: 4, Saddr: addr16("::1"), Daddr: addr16("::1")}, ""),
			want: []any{TLSSocket{Client: netip.MustParseAddrPort("[::1]:40000"), Server: netip.MustParseAddrPort("[::1]:5432"),
				PID: 10, FD: 9, Ktime: 4}},
			hook: bpfHookIdHOOK_TLS,
		},
		{
			name:    "short TLS socket record",
			rec:     []byte{uint8(bpfRecKindREC_TLS_SOCK), 0},
			hook:    bpfHookIdHOOK_TLS,
			wantErr: "want",
		},
		{
			name: "unix connect",
			rec: raw(t, bpfUnixConnectRec{Kind: uint8(bpfRecKindREC_UNIX_CONNECT), Port: 5432, Pid: 3, Tgid: 2, Uid: 1000,
				CgroupId: 99, Ktime: 4, Comm: comm, PathLen: 29, Path: path128("/run/postgresql/.s.PGSQL.5432")}, ""),
			want: []any{UnixConnect{Port: 5432, Path: "/run/postgresql/.s.PGSQL.5432", PID: 3, TGID: 2, UID: 1000,
				Comm: "psql", CgroupID: 99, Ktime: 4}},
			hook: bpfHookIdHOOK_UNIX_CONNECT,
		},
		{
			name: "unix connect, abstract socket",
			rec: raw(t, bpfUnixConnectRec{Kind: uint8(bpfRecKindREC_UNIX_CONNECT), Port: 5432, PathLen: 17,
				Path: path128("\x00pg/.s.PGSQL.5432")}, ""),
			want: []any{UnixConnect{Port: 5432, Path: "@pg/.s.PGSQL.5432"}},
			hook: bpfHookIdHOOK_UNIX_CONNECT,
		},
		{
			name:    "unix connect, path longer than the record",
			rec:     raw(t, bpfUnixConnectRec{Kind: uint8(bpfRecKindREC_UNIX_CONNECT), PathLen: 129}, ""),
			hook:    bpfHookIdHOOK_UNIX_CONNECT,
			wantErr: "129-byte path",
		},
		{
			name:    "short unix connect record",
			rec:     []byte{uint8(bpfRecKindREC_UNIX_CONNECT), 0},
			hook:    bpfHookIdHOOK_UNIX_CONNECT,
			wantErr: "want",
		},
		{name: "empty", rec: nil, wantErr: "empty record"},
		{name: "unknown kind", rec: []byte{99, 0, 0}, wantErr: "unknown record kind 99"},
		{name: "short segment header", rec: []byte{uint8(bpfRecKindREC_SEGMENT), 0, 0}, hook: bpfHookIdHOOK_TCX, wantErr: "shorter than its"},
		{
			name:    "segment claims more payload than it has",
			rec:     raw(t, bpfSegHdr{Kind: uint8(bpfRecKindREC_SEGMENT), Family: afInet, Len: 10}, "abc"),
			hook:    bpfHookIdHOOK_TCX,
			wantErr: "claims 10 payload bytes, has 3",
		},
		{
			name:    "segment of an unknown family",
			rec:     raw(t, bpfSegHdr{Kind: uint8(bpfRecKindREC_SEGMENT), Family: 7}, ""),
			hook:    bpfHookIdHOOK_TCX,
			wantErr: "unknown address family 7",
		},
		{
			name:    "short process record",
			rec:     []byte{uint8(bpfRecKindREC_UNIX), 0},
			hook:    bpfHookIdHOOK_UNIX,
			wantErr: "shorter than its",
		},
		{
			name:    "short connection record",
			rec:     []byte{uint8(bpfRecKindREC_CONN), 0},
			hook:    bpfHookIdHOOK_CONN,
			wantErr: "want",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			d := decoder{h: rec}
			hook, n, err := d.decode(tt.rec)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				if len(rec.calls) != 0 {
					t.Fatalf("a bad record reached the handler: %+v", rec.calls)
				}
				if hook != tt.hook {
					t.Errorf("hook = %d, want %d", hook, tt.hook)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if hook != tt.hook || n != tt.n {
				t.Errorf("hook, bytes = %d, %d; want %d, %d", hook, n, tt.hook, tt.n)
			}
			if !reflect.DeepEqual(rec.calls, tt.want) {
				t.Errorf("handler got\n%+v\nwant\n%+v", rec.calls, tt.want)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	tests := []struct {
		name    string
		in      Config
		want    Config
		wantErr string
	}{
		{name: "zero", in: Config{}, want: Config{RingBytes: 16 << 20, WakeupBytes: 1 << 20, PollInterval: defaultPollInterval}},
		{name: "small ring caps the wakeup threshold", in: Config{RingBytes: 64 << 10}, want: Config{RingBytes: 64 << 10, WakeupBytes: 16 << 10, PollInterval: defaultPollInterval}},
		{name: "ring not a power of two", in: Config{RingBytes: 3 << 20}, wantErr: "power of two"},
		{name: "ring below a page", in: Config{RingBytes: 512}, wantErr: "power of two"},
		{name: "wakeup above the ring", in: Config{RingBytes: 1 << 20, WakeupBytes: 2 << 20}, wantErr: "below the ring size"},
		{name: "negative poll", in: Config{PollInterval: -1}, wantErr: "must be positive"},
		{name: "port 0", in: Config{ServerPorts: []uint16{5432, 0}}, wantErr: "port 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.in.withDefaults()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParentFromStat(t *testing.T) {
	tests := []struct {
		stat string
		ppid uint32
		ok   bool
	}{
		{"1234 (postgres) S 1000 1234 1234 0 -1", 1000, true},
		{"1234 (a (b) c) R 77 1 1", 77, true},
		{"1234 (no-close S 1", 0, false},
		{"1234 (x) S", 0, false},
		{"1234 (x) S notanumber", 0, false},
	}
	for _, tt := range tests {
		ppid, ok := parentFromStat([]byte(tt.stat))
		if ppid != tt.ppid || ok != tt.ok {
			t.Errorf("parentFromStat(%q) = %d, %v; want %d, %v", tt.stat, ppid, ok, tt.ppid, tt.ok)
		}
	}
}
