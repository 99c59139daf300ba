package tcpstream

import (
	"net/netip"
	"time"
)

// Segment is one chunk of TCP payload as a kernel hook saw it. A large packet may arrive as
// several chunks at increasing Seq; retransmits arrive again as duplicates.
type Segment struct {
	Src, Dst netip.AddrPort
	Seq      uint32
	Flags    Flags
	Payload  []byte
	Time     time.Time
}

// Handler consumes one connection's reassembled streams. The Table calls it from the
// goroutine that calls Add and Expire.
type Handler interface {
	// Data is the next in-order bytes of one direction; data is only valid during the call.
	Data(fromClient bool, data []byte, ts time.Time)
	// Gap says that n bytes of one direction were lost and skipped.
	Gap(fromClient bool, n int, ts time.Time)
	// Close says the connection ended (FIN both ways, RST, idle, or eviction).
	Close(ts time.Time)
}

// TableConfig bounds a Table.
type TableConfig struct {
	Stream Config
	// MaxFlows caps the number of tracked connections; beyond it the least recently active
	// one is closed (its next segment, if any, starts it again mid-stream). Default 65536.
	MaxFlows int
	// MaxBuffered caps out-of-order bytes held across all connections. Default 64 MiB.
	MaxBuffered int
	// IdleTimeout closes connections that saw nothing for this long. Default 10 min: pooled
	// database connections idle for minutes and a closed one must not linger forever.
	IdleTimeout time.Duration
	// IsServer tells which end of a connection is the database server when the SYN was not
	// seen (attached mid-connection). When it is nil or says neither, the destination of the
	// first segment seen is taken as the server.
	IsServer func(netip.AddrPort) bool
}

type flowKey struct{ lo, hi netip.AddrPort }

func keyOf(a, b netip.AddrPort) flowKey {
	if a.Compare(b) > 0 {
		a, b = b, a
	}
	return flowKey{a, b}
}

type flow struct {
	key          flowKey
	client       netip.AddrPort
	h            Handler
	fromClient   *Stream
	fromServer   *Stream
	lastSeen     time.Time
	newer, older *flow // LRU list, most recent at Table.head
}

// Table tracks TCP connections and reassembles both directions of each.
type Table struct {
	cfg     TableConfig
	newConn func(client, server netip.AddrPort, ts time.Time) Handler
	flows   map[flowKey]*flow
	head    *flow // most recently active
	tail    *flow // least recently active
	budget  budget
	stats   Stats
}

// NewTable returns a Table that calls newConn for every new connection to get its Handler.
// newConn may return nil to ignore a connection (its segments are then dropped until it
// ends or idles out).
func NewTable(cfg TableConfig, newConn func(client, server netip.AddrPort, ts time.Time) Handler) *Table {
	cfg.Stream = cfg.Stream.withDefaults()
	if cfg.MaxFlows <= 0 {
		cfg.MaxFlows = 65536
	}
	if cfg.MaxBuffered <= 0 {
		cfg.MaxBuffered = 64 << 20
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	return &Table{cfg: cfg, newConn: newConn, flows: make(map[flowKey]*flow), budget: budget{max: cfg.MaxBuffered}}
}

// Stats returns the counters over all connections the Table has seen.
func (t *Table) Stats() Stats { return t.stats }

// Len is the number of tracked connections.
func (t *Table) Len() int { return len(t.flows) }

// Buffered is the number of out-of-order bytes held over all connections.
func (t *Table) Buffered() int { return t.budget.used }

// Add feeds one segment.
func (t *Table) Add(seg Segment) {
	k := keyOf(seg.Src, seg.Dst)
	f := t.flows[k]
	if f != nil && seg.Flags&SYN != 0 && f.restarted(seg) {
		// The 4-tuple was reused for a new connection before the old one was seen to end.
		t.remove(f, seg.Time)
		t.stats.FlowsClosed++
		f = nil
	}
	if f == nil {
		if len(seg.Payload) == 0 && seg.Flags&SYN == 0 {
			// A bare ACK/FIN/RST of a connection we do not know: nothing to start from.
			t.stats.IgnoredSegments++
			t.stats.Segments++
			return
		}
		f = t.open(k, seg)
	}
	t.touch(f, seg.Time)
	s := f.fromServer
	if seg.Src == f.client {
		s = f.fromClient
	}
	s.Add(seg.Seq, seg.Flags, seg.Payload, seg.Time)
	if seg.Flags&RST != 0 || (f.fromClient.Done() && f.fromServer.Done()) {
		t.remove(f, seg.Time)
		t.stats.FlowsClosed++
	}
}

// restarted reports whether a SYN starts a new connection on f's 4-tuple rather than
// repeating the one that opened it.
func (f *flow) restarted(seg Segment) bool {
	s := f.fromServer
	if seg.Src == f.client {
		s = f.fromClient
	}
	return s.started && (!s.synSeen || s.isn != seg.Seq)
}

func (t *Table) open(k flowKey, seg Segment) *flow {
	for len(t.flows) >= t.cfg.MaxFlows && t.tail != nil {
		t.remove(t.tail, seg.Time)
		t.stats.FlowsEvicted++
	}
	client, server := seg.Src, seg.Dst
	switch {
	case seg.Flags&SYN != 0:
		// A SYN comes from the client, a SYN-ACK from the server; without the ACK flag the
		// two look alike, so trust IsServer when it knows, else the SYN's sender.
		if t.cfg.IsServer != nil && t.cfg.IsServer(seg.Src) && !t.cfg.IsServer(seg.Dst) {
			client, server = seg.Dst, seg.Src
		}
	case t.cfg.IsServer != nil && t.cfg.IsServer(seg.Src) && !t.cfg.IsServer(seg.Dst):
		client, server = seg.Dst, seg.Src
	}
	f := &flow{key: k, client: client}
	f.h = t.newConn(client, server, seg.Time)
	f.fromClient = t.newStream(f, true)
	f.fromServer = t.newStream(f, false)
	t.flows[k] = f
	t.stats.FlowsOpened++
	return f
}

func (t *Table) newStream(f *flow, fromClient bool) *Stream {
	s := &Stream{cfg: t.cfg.Stream, stats: &t.stats, budget: &t.budget}
	if f.h == nil {
		s.data = func([]byte, time.Time) {}
		return s
	}
	h := f.h
	s.data = func(data []byte, ts time.Time) { h.Data(fromClient, data, ts) }
	s.gap = func(n int, ts time.Time) { h.Gap(fromClient, n, ts) }
	return s
}

func (t *Table) touch(f *flow, ts time.Time) {
	if ts.After(f.lastSeen) {
		f.lastSeen = ts
	}
	if t.head == f {
		return
	}
	t.unlink(f)
	f.older = t.head
	if t.head != nil {
		t.head.newer = f
	}
	t.head = f
	if t.tail == nil {
		t.tail = f
	}
}

func (t *Table) unlink(f *flow) {
	if f.newer != nil {
		f.newer.older = f.older
	} else if t.head == f {
		t.head = f.older
	}
	if f.older != nil {
		f.older.newer = f.newer
	} else if t.tail == f {
		t.tail = f.newer
	}
	f.newer, f.older = nil, nil
}

func (t *Table) remove(f *flow, ts time.Time) {
	t.unlink(f)
	delete(t.flows, f.key)
	// Whatever is held beyond a hole is still real data: hand it over (with the gap) before
	// saying goodbye, rather than dropping it.
	f.fromClient.skipHoles(ts, len(f.fromClient.pending))
	f.fromServer.skipHoles(ts, len(f.fromServer.pending))
	f.fromClient.release()
	f.fromServer.release()
	if f.h != nil {
		f.h.Close(ts)
	}
}

// Expire gives up on holes older than the hole timeout and closes connections idle for
// longer than IdleTimeout, both measured at now. Call it regularly (say every 100 ms to 1 s)
// with the capture clock.
func (t *Table) Expire(now time.Time) {
	for t.tail != nil && now.Sub(t.tail.lastSeen) > t.cfg.IdleTimeout {
		t.remove(t.tail, now)
		t.stats.FlowsExpired++
	}
	if t.budget.used == 0 {
		return
	}
	for _, f := range t.flows {
		if len(f.fromClient.pending) > 0 {
			f.fromClient.Expire(now)
		}
		if len(f.fromServer.pending) > 0 {
			f.fromServer.Expire(now)
		}
	}
}

// CloseAll closes every connection (the agent is stopping).
func (t *Table) CloseAll(now time.Time) {
	for t.tail != nil {
		t.remove(t.tail, now)
	}
}
