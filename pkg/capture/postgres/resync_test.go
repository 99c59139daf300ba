package postgres

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-db/vigil/pkg/event"
)

func loadRecordings(t testing.TB) map[string][]chunk {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "recordings", "*.rec"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no recordings in testdata/recordings (run TestRecorded -update): %v", err)
	}
	out := map[string][]chunk{}
	for _, f := range files {
		rec, err := readRecording(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = rec
	}
	return out
}

// byConn splits a recording into its connections.
func byConn(rec []chunk) [][]chunk {
	var out [][]chunk
	for _, c := range rec {
		for len(out) <= c.conn {
			out = append(out, nil)
		}
		out[c.conn] = append(out[c.conn], c)
	}
	return out
}

func key(e *event.Event) string {
	return fmt.Sprintf("%q %d %q %q", e.Statement, e.Rows, e.Error, e.Params)
}

// TestResyncEveryOffset starts decoding each recorded connection at every byte offset, as
// an agent attaching mid-connection would. The decoder must never panic, must find its
// way back, must never pair a statement with another one's response, and must then decode
// the rest of the conversation exactly as a decoder that saw everything.
func TestResyncEveryOffset(t *testing.T) {
	cfg := Config{RecordParams: true}
	for name, rec := range loadRecordings(t) {
		for ci, conn := range byConn(rec) {
			ref, _ := decodeRecording(cfg, conn)
			refEvents := ref[ci]
			known := map[string][]*event.Event{} // by key without params
			for _, e := range refEvents {
				known[keyNoParams(e)] = append(known[keyNoParams(e)], e)
			}
			statements := map[string]bool{}
			for _, e := range refEvents {
				statements[e.Statement] = true
			}
			for i := range conn {
				for j := range conn[i].data {
					cut := append([]chunk{{conn[i].conn, conn[i].fromClient, conn[i].data[j:], conn[i].at}}, conn[i+1:]...)
					evs, st := decodeRecording(cfg, cut)
					got := evs[ci]
					where := fmt.Sprintf("%s conn %d chunk %d byte %d", name, ci, i, j)
					for _, e := range got {
						if e.Detail == "" && e.Statement != "" && !isKnown(known[keyNoParams(e)], e) {
							t.Fatalf("%s: event not in the full decode (mispaired?): %s", where, key(e))
						}
						if e.Statement != "" && !statements[e.Statement] {
							t.Fatalf("%s: statement text not in the full decode: %q", where, e.Statement)
						}
					}
					if j > 0 && st.SkippedBytes == 0 && st.Resyncs == 0 && conn[i].fromClient {
						// A cut inside a client message must be noticed. (A cut into the
						// server's startup answers may land on a boundary: fine.)
						if !startsMessage(conn[i].data, j) {
							t.Fatalf("%s: cut mid-message without resync or skip: %+v", where, st)
						}
					}
					// Every statement whose request starts in a later chunk than the next
					// server answer after the cut must come out exactly as in the full decode.
					tail := laterThanNextAnswer(refEvents, conn, i)
					if !hasSuffix(got, tail) {
						t.Fatalf("%s: lost sync for good:\n got  %v\n want suffix %v\nstats %+v", where, keys(got), keys(tail), st)
					}
				}
			}
		}
	}
}

// startsMessage reports whether offset j of a client chunk is the start of a typed message
// (walking the chunk's framing from its start, when the chunk starts on a boundary).
func startsMessage(b []byte, j int) bool {
	for p := 0; p+5 <= len(b); {
		if p == j {
			return true
		}
		if p > j {
			return false
		}
		if b[p] == 0 { // startup packet: no type byte
			p += int(uint32(b[p])<<24 | uint32(b[p+1])<<16 | uint32(b[p+2])<<8 | uint32(b[p+3]))
			continue
		}
		p += 1 + int(uint32(b[p+1])<<24|uint32(b[p+2])<<16|uint32(b[p+3])<<8|uint32(b[p+4]))
	}
	return false
}

// laterThanNextAnswer returns the reference events whose request was sent after the first
// ReadyForQuery-bearing server chunk following chunk i.
func laterThanNextAnswer(ref []*event.Event, conn []chunk, i int) []*event.Event {
	k := i + 1
	for k < len(conn) && (conn[k].fromClient || !endsWithReady(conn[k].data)) {
		k++
	}
	if k >= len(conn) {
		return nil
	}
	var out []*event.Event
	for _, e := range ref {
		if e.Time.After(conn[k].at) {
			out = append(out, e)
		}
	}
	return out
}

func endsWithReady(b []byte) bool {
	return len(b) >= 6 && b[len(b)-6] == 'Z' && b[len(b)-5] == 0 && b[len(b)-4] == 0 && b[len(b)-3] == 0 && b[len(b)-2] == 5
}

func hasSuffix(got, tail []*event.Event) bool {
	if len(tail) > len(got) {
		return false
	}
	g := got[len(got)-len(tail):]
	for i := range tail {
		if g[i].Statement == "" && strings.Contains(g[i].Detail, "not seen: created before capture started") {
			// The cut fell before the Parse of a prepared statement: its text is rightly
			// unknown, and so are its parameter types, which leaves binary parameters hex;
			// the rest must match.
			w := *tail[i]
			w.Statement = ""
			if keyNoParams(g[i]) != keyNoParams(&w) || !sameOrHex(g[i].Params, w.Params) {
				return false
			}
			continue
		}
		if keyNoParams(g[i]) != keyNoParams(tail[i]) || !sameOrHex(g[i].Params, tail[i].Params) || g[i].Detail != tail[i].Detail {
			return false
		}
	}
	return true
}

func keyNoParams(e *event.Event) string {
	return fmt.Sprintf("%q %d %q", e.Statement, e.Rows, e.Error)
}

func isKnown(ref []*event.Event, e *event.Event) bool {
	for _, r := range ref {
		if sameOrHex(e.Params, r.Params) {
			return true
		}
	}
	return false
}

// sameOrHex: got are the want parameters, except that some may be hex. A decoder that
// joined mid-stream may not have seen a statement's parameter types (or not trusted the
// pairing that brought them), and then records binary values as hex: unknown, not wrong.
func sameOrHex(got, want []string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] && !strings.HasPrefix(got[i], `\x`) {
			return false
		}
	}
	return true
}

func keys(evs []*event.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, key(e)+" "+e.Detail)
	}
	return out
}
