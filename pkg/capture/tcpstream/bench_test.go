package tcpstream

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/reassembly"
)

// The benchmarks feed a request/response exchange like pgbench -S: a ~90-byte query one
// way, a ~110-byte answer the other, alternating, all in order. ns/op is per segment.

type nopHandler struct{ n int }

func (h *nopHandler) Data(_ bool, b []byte, _ time.Time) { h.n += len(b) }
func (h *nopHandler) Gap(bool, int, time.Time)           {}
func (h *nopHandler) Close(time.Time)                    {}

func BenchmarkTableInOrder(b *testing.B) {
	h := &nopHandler{}
	tb := NewTable(TableConfig{}, func(netip.AddrPort, netip.AddrPort, time.Time) Handler { return h })
	q, r := make([]byte, 90), make([]byte, 110)
	var cseq, sseq uint32 = 1, 1
	ts := t0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i&1 == 0 {
			tb.Add(Segment{Src: cli, Dst: srv, Seq: cseq, Payload: q, Time: ts})
			cseq += uint32(len(q))
		} else {
			tb.Add(Segment{Src: srv, Dst: cli, Seq: sseq, Payload: r, Time: ts})
			sseq += uint32(len(r))
		}
	}
}

func BenchmarkTableOutOfOrder(b *testing.B) {
	h := &nopHandler{}
	tb := NewTable(TableConfig{}, func(netip.AddrPort, netip.AddrPort, time.Time) Handler { return h })
	q := make([]byte, 100)
	var seq uint32 = 1
	b.ReportAllocs()
	b.ResetTimer()
	// Every pair of segments arrives swapped: half of them are held and copied.
	for i := 0; i < b.N; i += 2 {
		tb.Add(Segment{Src: cli, Dst: srv, Seq: seq + 100, Payload: q, Time: t0})
		tb.Add(Segment{Src: cli, Dst: srv, Seq: seq, Payload: q, Time: t0})
		seq += 200
	}
}

type gpStream struct{ n *int }

func (s gpStream) Accept(*layers.TCP, gopacket.CaptureInfo, reassembly.TCPFlowDirection, reassembly.Sequence, *bool, reassembly.AssemblerContext) bool {
	return true
}

func (s gpStream) ReassembledSG(sg reassembly.ScatterGather, _ reassembly.AssemblerContext) {
	l, _ := sg.Lengths()
	*s.n += len(sg.Fetch(l))
}

func (s gpStream) ReassemblyComplete(reassembly.AssemblerContext) bool { return false }

type gpFactory struct{ n int }

func (f *gpFactory) New(_, _ gopacket.Flow, _ *layers.TCP, _ reassembly.AssemblerContext) reassembly.Stream {
	return gpStream{&f.n}
}

type gpContext struct{ ci gopacket.CaptureInfo }

func (c *gpContext) GetCaptureInfo() gopacket.CaptureInfo { return c.ci }

// BenchmarkGopacketInOrder is the same exchange through gopacket's reassembly, for the
// comparison in the package comment.
func BenchmarkGopacketInOrder(b *testing.B) {
	f := &gpFactory{}
	a := reassembly.NewAssembler(reassembly.NewStreamPool(f))
	ip := layers.NewIPEndpoint(net.IPv4(127, 0, 0, 1))
	c2s := gopacket.NewFlow(layers.EndpointIPv4, ip.Raw(), ip.Raw())
	s2c := c2s.Reverse()
	q, r := make([]byte, 90), make([]byte, 110)
	ctx := &gpContext{ci: gopacket.CaptureInfo{Timestamp: t0}}
	var cseq, sseq uint32 = 1, 1
	// Start both directions with a SYN so gopacket does not wait for one.
	a.AssembleWithContext(c2s, &layers.TCP{SrcPort: 40000, DstPort: 5432, Seq: 0, SYN: true}, ctx)
	a.AssembleWithContext(s2c, &layers.TCP{SrcPort: 5432, DstPort: 40000, Seq: 0, SYN: true, ACK: true}, ctx)
	// One reused TCP layer per direction, so that only gopacket's own work is measured.
	tq := &layers.TCP{SrcPort: 40000, DstPort: 5432, ACK: true, BaseLayer: layers.BaseLayer{Payload: q}}
	tr := &layers.TCP{SrcPort: 5432, DstPort: 40000, ACK: true, BaseLayer: layers.BaseLayer{Payload: r}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i&1 == 0 {
			tq.Seq = cseq
			a.AssembleWithContext(c2s, tq, ctx)
			cseq += uint32(len(q))
		} else {
			tr.Seq = sseq
			a.AssembleWithContext(s2c, tr, ctx)
			sseq += uint32(len(r))
		}
	}
	b.StopTimer()
	if f.n == 0 {
		b.Fatal("gopacket delivered nothing")
	}
}
