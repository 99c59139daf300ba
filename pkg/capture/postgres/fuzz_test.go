package postgres

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/vigil-db/vigil/pkg/event"
)

// FuzzSession feeds two arbitrary byte streams, interleaved in pieces (and with gaps) as
// the script says. The decoder must not panic, must keep within its memory bounds, and
// must never emit more statement text than configured.
func FuzzSession(f *testing.F) {
	// Seeds: each recorded connection's two directions, and a few unit-test conversations.
	files, _ := filepath.Glob(filepath.Join("testdata", "recordings", "*.rec"))
	for _, file := range files {
		rec, err := readRecording(file)
		if err != nil {
			f.Fatal(err)
		}
		for _, conn := range byConn(rec) {
			var c, s []byte
			for _, ch := range conn {
				if ch.fromClient {
					c = append(c, ch.data...)
				} else {
					s = append(s, ch.data...)
				}
			}
			f.Add(c, s, []byte{0x17, 0x80, 0x33, 0x05})
		}
	}
	cfg := Config{MaxStatementBytes: 64, MaxBufferedMessage: 512, MaxPrepared: 4, RecordParams: true}
	f.Fuzz(func(t *testing.T, client, server, script []byte) {
		var evs int
		s := NewSession(cfg, func(e *event.Event) {
			evs++
			if len(e.Statement) > cfg.MaxStatementBytes {
				t.Fatalf("statement of %d bytes, limit %d", len(e.Statement), cfg.MaxStatementBytes)
			}
		})
		ts := t0
		step := 0
		for len(client) > 0 || len(server) > 0 {
			op := byte(step * 37)
			if len(script) > 0 {
				op = script[step%len(script)]
			}
			step++
			ts = ts.Add(time.Microsecond)
			fromClient := op&1 == 0
			src := &server
			if fromClient {
				src = &client
			}
			if len(*src) == 0 {
				fromClient = !fromClient
				src = &server
				if fromClient {
					src = &client
				}
			}
			n := min(len(*src), 1+int(op>>2))
			if op&2 != 0 && op>>5 == 7 {
				s.Gap(fromClient, n, ts) // these bytes are "lost"
			} else {
				s.Feed(fromClient, (*src)[:n], ts)
			}
			*src = (*src)[n:]
			for _, fr := range []*framer{&s.client, &s.server} {
				if len(fr.rbuf) > 2*cfg.MaxBufferedMessage+256 || cap(fr.buf) > 4*cfg.MaxBufferedMessage+cfg.MaxStatementBytes+2048 {
					t.Fatalf("buffers grew: rbuf %d, buf cap %d", len(fr.rbuf), cap(fr.buf))
				}
			}
			if len(s.stmts) > cfg.MaxPrepared || len(s.portals) > cfg.MaxPrepared {
				t.Fatalf("%d statements, %d portals kept", len(s.stmts), len(s.portals))
			}
		}
		s.Close(ts)
		if st := s.Stats(); st.Statements != uint64(evs) {
			t.Fatalf("Stats.Statements %d, events %d", st.Statements, evs)
		}
	})
}
