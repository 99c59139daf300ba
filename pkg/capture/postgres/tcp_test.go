package postgres

import (
	"net/netip"
	"testing"
	"time"

	"github.com/vigil-db/vigil/pkg/capture/tcpstream"
	"github.com/vigil-db/vigil/pkg/event"
)

// sessionHandler adapts a Session to tcpstream.Handler, as the agent's glue does.
type sessionHandler struct{ s *Session }

func (h sessionHandler) Data(fromClient bool, b []byte, ts time.Time) { h.s.Feed(fromClient, b, ts) }
func (h sessionHandler) Gap(fromClient bool, n int, ts time.Time)     { h.s.Gap(fromClient, n, ts) }
func (h sessionHandler) Close(ts time.Time)                           { h.s.Close(ts) }

// TestThroughReassembly cuts each recorded connection into small TCP segments, delivers
// them reordered and duplicated through tcpstream, and expects exactly the events of the
// recording fed directly.
func TestThroughReassembly(t *testing.T) {
	cfg := Config{RecordParams: true}
	server := netip.MustParseAddrPort("127.0.0.1:5432")
	for name, rec := range loadRecordings(t) {
		want, _ := decodeRecording(cfg, rec)
		got := map[int][]*event.Event{}
		for ci, conn := range byConn(rec) {
			client := netip.AddrPortFrom(server.Addr(), uint16(40000+ci))
			tb := tcpstream.NewTable(tcpstream.TableConfig{IsServer: func(a netip.AddrPort) bool { return a == server }},
				func(_, _ netip.AddrPort, _ time.Time) tcpstream.Handler {
					return sessionHandler{NewSession(cfg, func(e *event.Event) { got[ci] = append(got[ci], e) })}
				})
			seq := map[bool]uint32{true: 1000, false: 900000}
			var segs []tcpstream.Segment
			for _, ch := range conn {
				src, dst := client, server
				if !ch.fromClient {
					src, dst = server, client
				}
				for off := 0; off < len(ch.data); off += 37 {
					end := min(off+37, len(ch.data))
					segs = append(segs, tcpstream.Segment{Src: src, Dst: dst, Seq: seq[ch.fromClient], Payload: ch.data[off:end], Time: ch.at})
					seq[ch.fromClient] += uint32(end - off)
				}
			}
			// Swap neighbours of the same direction (out of order) and repeat every fifth
			// segment (retransmits).
			for i := 0; i+1 < len(segs); i += 3 {
				if segs[i].Src == segs[i+1].Src {
					segs[i], segs[i+1] = segs[i+1], segs[i]
				}
			}
			for i, sg := range segs {
				tb.Add(sg)
				if i%5 == 0 {
					tb.Add(sg)
				}
			}
			tb.CloseAll(conn[len(conn)-1].at)
			if st := tb.Stats(); st.Gaps != 0 || st.OutOfOrder == 0 || st.DuplicateBytes == 0 {
				t.Errorf("%s conn %d: reassembly stats %+v", name, ci, st)
			}
		}
		for ci := range want {
			if g, w := keys(got[ci]), keys(want[ci]); len(g) != len(w) || len(g) == 0 {
				t.Errorf("%s conn %d: %d events through reassembly, %d direct", name, ci, len(g), len(w))
			} else {
				for i := range g {
					if g[i] != w[i] {
						t.Errorf("%s conn %d event %d: %s, want %s", name, ci, i, g[i], w[i])
					}
				}
			}
		}
	}
}
