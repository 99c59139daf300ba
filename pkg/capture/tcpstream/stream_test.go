package tcpstream

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// recorder collects what a Stream delivers, rendering gaps inline as "<gap n>".
type recorder struct {
	out strings.Builder
}

func (r *recorder) data(b []byte, _ time.Time) { r.out.Write(b) }
func (r *recorder) gap(n int, _ time.Time)     { fmt.Fprintf(&r.out, "<gap %d>", n) }

type chunk struct {
	seq   uint32
	flags Flags
	data  string
	at    time.Duration // offset from t0
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func TestStream(t *testing.T) {
	const isn = 1000
	tests := []struct {
		name     string
		cfg      Config
		chunks   []chunk
		expireAt time.Duration // when non-zero, Expire is called at t0+expireAt at the end
		want     string
		done     bool
		buffered int
	}{
		{
			name:   "in order after SYN",
			chunks: []chunk{{isn, SYN, "", 0}, {isn + 1, 0, "hello ", 0}, {isn + 7, 0, "world", 0}},
			want:   "hello world",
		},
		{
			name:   "SYN with payload (fast open)",
			chunks: []chunk{{isn, SYN, "ab", 0}, {isn + 3, 0, "cd", 0}},
			want:   "abcd",
		},
		{
			name:   "duplicates and retransmits are dropped",
			chunks: []chunk{{isn, SYN, "", 0}, {isn + 1, 0, "abc", 0}, {isn + 1, 0, "abc", 0}, {isn + 4, 0, "def", 0}, {isn + 2, 0, "bcdefg", 0}},
			want:   "abcdefg",
		},
		{
			name:   "out of order fills in",
			chunks: []chunk{{isn, SYN, "", 0}, {isn + 4, 0, "def", 0}, {isn + 7, 0, "gh", 0}, {isn + 1, 0, "abc", 0}},
			want:   "abcdefgh",
		},
		{
			name:   "overlapping out-of-order chunks",
			chunks: []chunk{{isn, SYN, "", 0}, {isn + 3, 0, "cdef", 0}, {isn + 5, 0, "efgh", 0}, {isn + 4, 0, "de", 0}, {isn + 1, 0, "ab", 0}},
			want:   "abcdefgh",
		},
		{
			name:   "mid-stream start at the first seq seen",
			chunks: []chunk{{5555, 0, "xyz", 0}, {5558, 0, "123", 0}},
			want:   "xyz123",
		},
		{
			name:   "sequence wraparound",
			chunks: []chunk{{0xfffffffd, 0, "abc", 0}, {0, 0, "def", 0}, {5, 0, "i", 0}, {3, 0, "gh", 0}},
			want:   "abcdefghi",
		},
		{
			name:   "SYN wraparound",
			chunks: []chunk{{0xffffffff, SYN, "", 0}, {0, 0, "abc", 0}},
			want:   "abc",
		},
		{
			name:   "hole given up on by memory bound",
			cfg:    Config{MaxBuffered: 4},
			chunks: []chunk{{isn, SYN, "", 0}, {isn + 1, 0, "ab", 0}, {isn + 5, 0, "fg", 0}, {isn + 7, 0, "hij", 0}},
			want:   "ab<gap 2>fghij",
		},
		{
			name:   "chunk larger than the bound",
			cfg:    Config{MaxBuffered: 2},
			chunks: []chunk{{isn, SYN, "", 0}, {isn + 3, 0, "cdef", 0}},
			want:   "<gap 2>cdef",
		},
		{
			name:   "hole given up on by time when more data arrives",
			chunks: []chunk{{isn, SYN, "", 0}, {isn + 1, 0, "a", 0}, {isn + 3, 0, "c", time.Millisecond}, {isn + 4, 0, "d", 2 * time.Second}},
			want:   "a<gap 1>cd",
		},
		{
			name:     "hole given up on by Expire",
			chunks:   []chunk{{isn, SYN, "", 0}, {isn + 1, 0, "a", 0}, {isn + 3, 0, "c", 0}},
			expireAt: 2 * time.Second,
			want:     "a<gap 1>c",
		},
		{
			name:     "young hole waits",
			chunks:   []chunk{{isn, SYN, "", 0}, {isn + 1, 0, "a", 0}, {isn + 3, 0, "c", 0}},
			expireAt: 500 * time.Millisecond,
			want:     "a",
			buffered: 1,
		},
		{
			name:   "two holes, data in between",
			cfg:    Config{MaxBuffered: 2},
			chunks: []chunk{{isn, SYN, "", 0}, {isn + 2, 0, "b", 0}, {isn + 4, 0, "d", 0}, {isn + 6, 0, "fg", 0}},
			want:   "<gap 1>b<gap 1>d<gap 1>fg",
		},
		{
			name:   "FIN ends the stream, later data ignored",
			chunks: []chunk{{isn, SYN, "", 0}, {isn + 1, FIN, "ab", 0}, {isn + 3, 0, "zz", 0}},
			want:   "ab",
			done:   true,
		},
		{
			name:   "FIN waits for the hole before it",
			chunks: []chunk{{isn, SYN, "", 0}, {isn + 3, FIN, "c", 0}, {isn + 1, 0, "ab", 0}},
			want:   "abc",
			done:   true,
		},
		{
			name:   "RST delivers what is held, with the gap",
			chunks: []chunk{{isn, SYN, "", 0}, {isn + 1, 0, "a", 0}, {isn + 3, 0, "c", 0}, {isn + 4, RST, "", 0}},
			want:   "a<gap 1>c",
			done:   true,
		},
		{
			name:   "retransmitted SYN ignored",
			chunks: []chunk{{isn, SYN, "", 0}, {isn, SYN, "", 0}, {isn + 1, 0, "a", 0}},
			want:   "a",
		},
		{
			name:   "stale retransmit far behind",
			chunks: []chunk{{isn, SYN, "", 0}, {isn + 1, 0, "abcdef", 0}, {isn - 100, 0, "old", 0}, {isn + 7, 0, "g", 0}},
			want:   "abcdefg",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r recorder
			s := NewStream(tc.cfg, r.data, r.gap)
			for _, c := range tc.chunks {
				s.Add(c.seq, c.flags, []byte(c.data), t0.Add(c.at))
			}
			if tc.expireAt != 0 {
				s.Expire(t0.Add(tc.expireAt))
			}
			if got := r.out.String(); got != tc.want {
				t.Errorf("delivered %q, want %q", got, tc.want)
			}
			if s.Done() != tc.done {
				t.Errorf("Done() = %v, want %v", s.Done(), tc.done)
			}
			if s.Buffered() != tc.buffered {
				t.Errorf("Buffered() = %d, want %d", s.Buffered(), tc.buffered)
			}
		})
	}
}

func TestStreamDoesNotRetainPayload(t *testing.T) {
	var r recorder
	s := NewStream(Config{}, r.data, r.gap)
	buf := []byte("cd")
	s.Add(1, SYN, nil, t0)
	s.Add(4, 0, buf, t0) // held: must be a copy
	copy(buf, "XX")
	s.Add(2, 0, []byte("ab"), t0)
	if got := r.out.String(); got != "abcd" {
		t.Fatalf("delivered %q, want abcd", got)
	}
}

func TestStreamStats(t *testing.T) {
	var r recorder
	s := NewStream(Config{MaxBuffered: 2}, r.data, r.gap)
	s.Add(0, SYN, nil, t0)
	s.Add(1, 0, []byte("ab"), t0)
	s.Add(1, 0, []byte("ab"), t0)  // duplicate
	s.Add(5, 0, []byte("e"), t0)   // held
	s.Add(6, 0, []byte("fgh"), t0) // over the bound: gap of 2 (c, d)
	got := s.Stats()
	want := Stats{Segments: 5, Bytes: 6, DuplicateBytes: 2, OutOfOrder: 1, Gaps: 1, GapBytes: 2, GapsForMemory: 1}
	if got != want {
		t.Fatalf("stats = %+v\nwant    %+v", got, want)
	}
}

// tableRecorder records per connection what a Table delivers.
type tableRecorder struct {
	conns []*connRecorder
}

type connRecorder struct {
	client, server netip.AddrPort
	c2s, s2c       recorder
	closed         bool
}

func (c *connRecorder) Data(fromClient bool, b []byte, ts time.Time) {
	if fromClient {
		c.c2s.data(b, ts)
	} else {
		c.s2c.data(b, ts)
	}
}

func (c *connRecorder) Gap(fromClient bool, n int, ts time.Time) {
	if fromClient {
		c.c2s.gap(n, ts)
	} else {
		c.s2c.gap(n, ts)
	}
}

func (c *connRecorder) Close(time.Time) { c.closed = true }

func (r *tableRecorder) newConn(client, server netip.AddrPort, _ time.Time) Handler {
	c := &connRecorder{client: client, server: server}
	r.conns = append(r.conns, c)
	return c
}

var (
	cli = netip.MustParseAddrPort("127.0.0.1:40000")
	srv = netip.MustParseAddrPort("127.0.0.1:5432")
)

func TestTableBothDirections(t *testing.T) {
	var r tableRecorder
	tb := NewTable(TableConfig{}, r.newConn)
	tb.Add(Segment{Src: cli, Dst: srv, Seq: 100, Flags: SYN, Time: t0})
	tb.Add(Segment{Src: srv, Dst: cli, Seq: 900, Flags: SYN, Time: t0})
	tb.Add(Segment{Src: cli, Dst: srv, Seq: 101, Payload: []byte("Q1"), Time: t0})
	tb.Add(Segment{Src: srv, Dst: cli, Seq: 901, Payload: []byte("R1"), Time: t0})
	tb.Add(Segment{Src: cli, Dst: srv, Seq: 103, Payload: []byte("Q2"), Flags: FIN, Time: t0})
	if tb.Len() != 1 {
		t.Fatalf("Len = %d after one direction's FIN, want 1", tb.Len())
	}
	tb.Add(Segment{Src: srv, Dst: cli, Seq: 903, Flags: FIN, Time: t0})
	if len(r.conns) != 1 {
		t.Fatalf("%d connections, want 1", len(r.conns))
	}
	c := r.conns[0]
	if c.client != cli || c.server != srv {
		t.Errorf("client/server = %v/%v", c.client, c.server)
	}
	if c.c2s.out.String() != "Q1Q2" || c.s2c.out.String() != "R1" {
		t.Errorf("c2s %q s2c %q", c.c2s.out.String(), c.s2c.out.String())
	}
	if !c.closed || tb.Len() != 0 {
		t.Errorf("closed=%v len=%d, want closed and removed", c.closed, tb.Len())
	}
}

func TestTableMidStreamUsesIsServer(t *testing.T) {
	var r tableRecorder
	tb := NewTable(TableConfig{IsServer: func(a netip.AddrPort) bool { return a.Port() == 5432 }}, r.newConn)
	// The first segment seen is the server's answer.
	tb.Add(Segment{Src: srv, Dst: cli, Seq: 7, Payload: []byte("R"), Time: t0})
	tb.Add(Segment{Src: cli, Dst: srv, Seq: 70, Payload: []byte("Q"), Time: t0})
	c := r.conns[0]
	if c.client != cli || c.s2c.out.String() != "R" || c.c2s.out.String() != "Q" {
		t.Fatalf("client %v s2c %q c2s %q", c.client, c.s2c.out.String(), c.c2s.out.String())
	}
}

func TestTableBounds(t *testing.T) {
	var r tableRecorder
	tb := NewTable(TableConfig{MaxFlows: 2, MaxBuffered: 3, IdleTimeout: time.Minute}, r.newConn)
	port := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(cli.Addr(), p) }
	tb.Add(Segment{Src: port(1), Dst: srv, Seq: 10, Payload: []byte("a"), Time: t0})
	tb.Add(Segment{Src: port(2), Dst: srv, Seq: 10, Payload: []byte("a"), Time: t0.Add(time.Second)})
	// Flow 2 holds 2 bytes beyond a hole; flow 1 then cannot hold 2 more (overall bound 3).
	tb.Add(Segment{Src: port(2), Dst: srv, Seq: 12, Payload: []byte("cd"), Time: t0.Add(time.Second)})
	tb.Add(Segment{Src: port(1), Dst: srv, Seq: 12, Payload: []byte("cd"), Time: t0.Add(time.Second)})
	if got := r.conns[0].c2s.out.String(); got != "a<gap 1>cd" {
		t.Errorf("flow 1 delivered %q, want the hole skipped for memory", got)
	}
	if tb.Buffered() != 2 {
		t.Errorf("Buffered = %d, want 2", tb.Buffered())
	}
	// A third flow evicts the least recently active (flow 2 was touched before flow 1's
	// last segment), delivering what it held.
	tb.Add(Segment{Src: port(3), Dst: srv, Seq: 10, Payload: []byte("x"), Time: t0.Add(2 * time.Second)})
	if !r.conns[1].closed || r.conns[1].c2s.out.String() != "a<gap 1>cd" {
		t.Errorf("flow 2 closed=%v delivered %q", r.conns[1].closed, r.conns[1].c2s.out.String())
	}
	if tb.Buffered() != 0 {
		t.Errorf("Buffered = %d after eviction, want 0", tb.Buffered())
	}
	tb.Expire(t0.Add(62 * time.Second))
	if tb.Len() != 1 || !r.conns[0].closed || r.conns[2].closed {
		t.Errorf("after expiry: len %d, flow 1 closed %v, flow 3 closed %v", tb.Len(), r.conns[0].closed, r.conns[2].closed)
	}
	st := tb.Stats()
	if st.FlowsOpened != 3 || st.FlowsEvicted != 1 || st.FlowsExpired != 1 || st.GapsForMemory != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestTablePortReuse(t *testing.T) {
	var r tableRecorder
	tb := NewTable(TableConfig{}, r.newConn)
	tb.Add(Segment{Src: cli, Dst: srv, Seq: 100, Flags: SYN, Time: t0})
	tb.Add(Segment{Src: cli, Dst: srv, Seq: 101, Payload: []byte("old"), Time: t0})
	tb.Add(Segment{Src: cli, Dst: srv, Seq: 5000, Flags: SYN, Time: t0})
	tb.Add(Segment{Src: cli, Dst: srv, Seq: 5001, Payload: []byte("new"), Time: t0})
	if len(r.conns) != 2 || !r.conns[0].closed || r.conns[1].c2s.out.String() != "new" {
		t.Fatalf("conns %d, first closed %v", len(r.conns), r.conns[0].closed)
	}
}

// TestStreamRandomOrder feeds a stream's chunks in every kind of shuffled, duplicated order
// and checks the bytes come out whole and in order.
func TestStreamRandomOrder(t *testing.T) {
	want := bytes.Repeat([]byte("0123456789abcdef"), 64)
	for seed := uint32(1); seed < 200; seed++ {
		var r recorder
		s := NewStream(Config{}, r.data, r.gap)
		isn := seed * 2654435761 // spreads the ISN over the sequence space, wraps included
		s.Add(isn, SYN, nil, t0)
		var cs []chunk
		for off := 0; off < len(want); {
			n := 1 + int((seed*uint32(off+7))%97)
			if off+n > len(want) {
				n = len(want) - off
			}
			cs = append(cs, chunk{seq: isn + 1 + uint32(off), data: string(want[off : off+n])})
			off += n
		}
		x := seed
		for i := len(cs) - 1; i > 0; i-- { // deterministic shuffle
			x = x*1103515245 + 12345
			j := int(x>>16) % (i + 1)
			cs[i], cs[j] = cs[j], cs[i]
		}
		for i, c := range cs {
			s.Add(c.seq, 0, []byte(c.data), t0)
			if i%3 == 0 {
				s.Add(c.seq, 0, []byte(c.data), t0)
			}
		}
		if r.out.String() != string(want) {
			t.Fatalf("seed %d: delivered %d bytes, differs from the %d sent", seed, r.out.Len(), len(want))
		}
	}
}
