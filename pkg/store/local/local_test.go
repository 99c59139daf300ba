package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// mkEvents returns statement events with seqs from..to, alternating users and kinds so
// that filters have something to select.
func mkEvents(from, to uint64) []*event.Event {
	var evs []*event.Event
	for seq := from; seq <= to; seq++ {
		e := &event.Event{
			Time:      t0.Add(time.Duration(seq) * time.Second),
			Type:      event.TypeStatement,
			Source:    event.SourceEBPF,
			Protocol:  event.ProtocolPostgres,
			Host:      "h1",
			AgentID:   "a1",
			Seq:       seq,
			DBUser:    []string{"alice", "bob"}[seq%2],
			Database:  "shop",
			Statement: fmt.Sprintf("SELECT %d FROM orders", seq),
			Kind:      "SELECT",
			Tables:    []string{"orders"},
			Hash:      fmt.Sprintf("h%d", seq),
		}
		if seq%5 == 0 {
			e.Kind, e.Tables = "DELETE", []string{"customers"}
		}
		evs = append(evs, e)
	}
	return evs
}

func open(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	opts.Logger = testLogger(t)
	s, err := Open(dir, opts, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func appendAll(t *testing.T, s *Store, evs []*event.Event, batch int) {
	t.Helper()
	for i := 0; i < len(evs); i += batch {
		if err := s.Append(context.Background(), evs[i:min(i+batch, len(evs))]); err != nil {
			t.Fatal(err)
		}
	}
}

func seqs(t *testing.T, r store.Reader, q store.Query) []uint64 {
	t.Helper()
	var out []uint64
	err := r.Read(context.Background(), q, func(e *event.Event) error {
		out = append(out, e.Seq)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestReadQueries(t *testing.T) {
	// Tiny segments so that seeking and the backwards Limit scan cross segment borders.
	for _, segBytes := range []int64{0, 700} {
		t.Run(fmt.Sprintf("segment_bytes=%d", segBytes), func(t *testing.T) {
			s := open(t, t.TempDir(), Options{SegmentBytes: segBytes})
			appendAll(t, s, mkEvents(1, 40), 7)
			if segBytes > 0 && len(s.segs) < 5 {
				t.Fatalf("want many segments, got %d", len(s.segs))
			}
			deletes := []uint64{5, 10, 15, 20, 25, 30, 35, 40}
			tests := []struct {
				name string
				q    store.Query
				want []uint64
			}{
				{"all", store.Query{}, span(1, 40)},
				{"after", store.Query{AfterSeq: 33}, span(34, 40)},
				{"after first", store.Query{AfterSeq: 1}, span(2, 40)},
				{"after end", store.Query{AfterSeq: 40}, nil},
				{"after past end", store.Query{AfterSeq: 99}, nil},
				{"limit", store.Query{Limit: 3}, span(38, 40)},
				{"limit larger than store", store.Query{Limit: 100}, span(1, 40)},
				{"limit with filter", store.Query{Kind: "DELETE", Limit: 3}, deletes[5:]},
				{"filter", store.Query{Kind: "DELETE"}, deletes},
				{"table", store.Query{Table: "customers"}, deletes},
				{"after and limit", store.Query{AfterSeq: 36, Limit: 10}, span(37, 40)},
				{"user", store.Query{DBUser: "alice", AfterSeq: 30}, []uint64{32, 34, 36, 38, 40}},
				{"time", store.Query{Since: t0.Add(10 * time.Second), Until: t0.Add(13 * time.Second)}, span(10, 12)},
			}
			for _, tt := range tests {
				t.Run(tt.name, func(t *testing.T) {
					if got := seqs(t, s, tt.q); !slices.Equal(got, tt.want) {
						t.Errorf("got %v, want %v", got, tt.want)
					}
				})
			}
		})
	}
}

func TestRoundTripBytes(t *testing.T) {
	// What Read returns must re-encode to the bytes on disk: the hash chain depends on it.
	dir := t.TempDir()
	s := open(t, dir, Options{})
	evs := mkEvents(1, 3)
	uid := int32(0)
	evs[1].Process = &event.Process{PID: 7, UID: &uid, Comm: "psql"}
	evs[2].Statement = "SELECT 'ünï\"\n\\' \x01"
	evs[2].Time = time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))
	appendAll(t, s, evs, 3)
	data, err := os.ReadFile(filepath.Join(dir, segmentName(1)))
	if err != nil {
		t.Fatal(err)
	}
	var again []byte
	s.Read(context.Background(), store.Query{}, func(e *event.Event) error {
		b, err := e.MarshalJSON()
		again = append(append(again, b...), '\n')
		return err
	})
	if string(again) != string(data) {
		t.Fatalf("re-encoded:\n%s\non disk:\n%s", again, data)
	}
}

func TestAppendRefusesNonAscendingSeq(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	appendAll(t, s, mkEvents(1, 5), 5)
	tests := []struct {
		name string
		evs  []*event.Event
	}{
		{"repeat", mkEvents(5, 6)},
		{"older", mkEvents(2, 2)},
		{"unsorted batch", append(mkEvents(7, 8), mkEvents(6, 6)...)},
		{"zero", []*event.Event{{Seq: 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.Append(context.Background(), tt.evs); err == nil {
				t.Fatal("want an error")
			}
			if got := seqs(t, s, store.Query{}); !slices.Equal(got, span(1, 5)) {
				t.Fatalf("store changed: %v", got)
			}
		})
	}
	// A gap is allowed (a restart after a crash that lost a tail continues past it).
	appendAll(t, s, mkEvents(9, 9), 1)
	if seq, hash := s.Last(); seq != 9 || hash != "h9" {
		t.Fatalf("Last = %d %q", seq, hash)
	}
}

func TestReopenContinues(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentBytes: 500}, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, mkEvents(1, 10), 3)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{SegmentBytes: 500})
	if seq, hash := s.Last(); seq != 10 || hash != "h10" {
		t.Fatalf("Last after reopen = %d %q", seq, hash)
	}
	appendAll(t, s, mkEvents(11, 20), 4)
	if got := seqs(t, s, store.Query{}); !slices.Equal(got, span(1, 20)) {
		t.Fatalf("got %v", got)
	}
}

func TestSecondWriterRefused(t *testing.T) {
	dir := t.TempDir()
	open(t, dir, Options{})
	if _, err := Open(dir, Options{}, nil); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second writer: err = %v", err)
	}
	if _, err := Open(dir, Options{ReadOnly: true}, nil); err != nil {
		t.Fatalf("reader beside the writer: %v", err)
	}
}

func TestRecoverTail(t *testing.T) {
	full := func() string {
		var b strings.Builder
		for _, e := range mkEvents(1, 4) {
			line, _ := e.MarshalJSON()
			b.Write(line)
			b.WriteByte('\n')
		}
		return b.String()
	}()
	torn, _ := mkEvents(5, 5)[0].MarshalJSON()
	tests := []struct {
		name     string
		tail     string // appended to four good lines
		wantCuts float64
	}{
		{"clean", "", 0},
		{"torn line", string(torn[:40]), 1},
		{"zeros from an unsynced extent", "\x00\x00\x00\x00", 1},
		{"undecodable complete line then torn", "{\"seq\":5,\x00\x00\n{\"se", 2},
		{"nearly whole line", string(torn[:len(torn)-1]), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, segmentName(1))
			if err := os.WriteFile(path, []byte(full+tt.tail), 0o640); err != nil {
				t.Fatal(err)
			}
			// A reader beside the crashed writer sees the good events and changes nothing.
			ro, err := Open(dir, Options{ReadOnly: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := seqs(t, ro, store.Query{}); !slices.Equal(got, span(1, 4)) {
				t.Fatalf("read-only got %v", got)
			}
			if seq, _ := ro.Last(); seq != 4 {
				t.Fatalf("read-only Last = %d", seq)
			}
			if data, _ := os.ReadFile(path); string(data) != full+tt.tail {
				t.Fatal("read-only open changed the file")
			}

			reg := prometheus.NewRegistry()
			s, err := Open(dir, Options{Logger: testLogger(t)}, reg)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if got := value(s.m.tornLines); got != tt.wantCuts {
				t.Errorf("torn lines counted %v, want %v", got, tt.wantCuts)
			}
			if data, _ := os.ReadFile(path); string(data) != full {
				t.Fatalf("after recovery the segment is\n%q", data)
			}
			if seq, hash := s.Last(); seq != 4 || hash != "h4" {
				t.Fatalf("Last = %d %q", seq, hash)
			}
			appendAll(t, s, mkEvents(5, 6), 2)
			if got := seqs(t, s, store.Query{}); !slices.Equal(got, span(1, 6)) {
				t.Fatalf("got %v", got)
			}
		})
	}
}

func TestRecoverRemovesEmptyLastSegment(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentBytes: 400}, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, mkEvents(1, 6), 1)
	s.Close()
	// A crash right after rotation: the new segment exists with only a torn line.
	bad := filepath.Join(dir, segmentName(7))
	if err := os.WriteFile(bad, []byte(`{"time":"2026`), 0o640); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{SegmentBytes: 400})
	if _, err := os.Stat(bad); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("empty segment still there: %v", err)
	}
	if seq, _ := s.Last(); seq != 6 {
		t.Fatalf("Last = %d", seq)
	}
	appendAll(t, s, mkEvents(7, 8), 2)
	if got := seqs(t, s, store.Query{}); !slices.Equal(got, span(1, 8)) {
		t.Fatalf("got %v", got)
	}
}

func TestReadSkipsCorruptLine(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	s, err := Open(dir, Options{SegmentBytes: 450, Logger: testLogger(t)}, reg)
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, mkEvents(1, 6), 1)
	s.Close()
	// Damage an event in the first segment (not the tail, which recovery would cut).
	path := filepath.Join(dir, segmentName(1))
	data, _ := os.ReadFile(path)
	data[10] = '!'
	os.WriteFile(path, data, 0o640)

	s = open(t, dir, Options{SegmentBytes: 450})
	got := seqs(t, s, store.Query{})
	if !slices.Equal(got, span(2, 6)) {
		t.Fatalf("got %v", got)
	}
	if n := value(s.m.corruptLines); n != 1 {
		t.Fatalf("corrupt lines counted: %v", n)
	}
}

func TestWaitAfter(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	appendAll(t, s, mkEvents(1, 2), 2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.WaitAfter(ctx, 1); err != nil {
		t.Fatalf("data already there: %v", err)
	}
	done := make(chan error)
	go func() { done <- s.WaitAfter(ctx, 2) }()
	select {
	case err := <-done:
		t.Fatalf("returned before new data: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	appendAll(t, s, mkEvents(3, 3), 1)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := s.WaitAfter(short, 3); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want deadline, got %v", err)
	}
	go func() { done <- s.WaitAfter(ctx, 3) }()
	s.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("want ErrClosed, got %v", err)
	}
}

func TestSyncInterval(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SyncInterval: 20 * time.Millisecond})
	appendAll(t, s, mkEvents(1, 50), 1)
	time.Sleep(60 * time.Millisecond)
	s.mu.Lock()
	dirty := s.dirty
	s.mu.Unlock()
	if dirty {
		t.Fatal("the periodic fsync did not run")
	}
	if got := seqs(t, s, store.Query{}); !slices.Equal(got, span(1, 50)) {
		t.Fatalf("got %v", got)
	}
}

// testLogger shows the store's messages only for a failing or verbose test.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// value reads a counter or gauge.
func value(c prometheus.Metric) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	if m.Counter != nil {
		return m.Counter.GetValue()
	}
	return m.Gauge.GetValue()
}

func TestSeekWithIndex(t *testing.T) {
	// Segments of several index intervals, read by a writer that wrote them, by a writer
	// that reopened them (the index is built on first seek, then extended by appends), and
	// by a read-only open (no index).
	const n = 6000
	dir := t.TempDir()
	s, err := Open(dir, Options{SegmentBytes: 1 << 20, Logger: testLogger(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, mkEvents(1, n/2), 100)
	check := func(name string, r store.Reader, last uint64) {
		t.Run(name, func(t *testing.T) {
			for _, after := range []uint64{1, 999, 1000, 1001, 2345, 3000, last - 1, last} {
				if got := seqs(t, r, store.Query{AfterSeq: after}); !slices.Equal(got, span(after+1, last)) {
					t.Fatalf("after %d: got %d events from %v", after, len(got), got[:min(3, len(got))])
				}
				want := span(max(after+1, last-4), last)
				if after >= last {
					want = nil
				}
				if got := seqs(t, r, store.Query{AfterSeq: after, Limit: 5}); !slices.Equal(got, want) {
					t.Fatalf("after %d limit 5: got %v, want %v", after, got, want)
				}
			}
		})
	}
	check("writer", s, n/2)
	if len(s.segs[0].index) < 3 {
		t.Fatalf("segment 0 has %d index entries", len(s.segs[0].index))
	}
	s.Close()

	s = open(t, dir, Options{SegmentBytes: 1 << 20})
	appendAll(t, s, mkEvents(n/2+1, n/2+500), 100) // into the reopened, unindexed active segment
	check("reopened", s, n/2+500)
	if !s.segs[0].indexed || len(s.segs[0].index) < 3 {
		t.Fatal("the first seek did not index the reopened segment")
	}
	appendAll(t, s, mkEvents(n/2+501, n), 100)
	check("reopened and extended", s, n)
	ro, err := Open(dir, Options{ReadOnly: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	check("read-only", ro, n)
}

func TestLimitAcrossChunks(t *testing.T) {
	// Lines longer than the backwards read's chunk, and many small ones in between.
	s := open(t, t.TempDir(), Options{})
	evs := mkEvents(1, 3000)
	for i := 0; i < len(evs); i += 700 {
		evs[i].Statement = strings.Repeat("x", backChunk+1000)
	}
	appendAll(t, s, evs, 500)
	for _, limit := range []int{1, 2, 299, 300, 301, 1400, 2999, 3000, 5000} {
		want := span(uint64(max(1, 3001-limit)), 3000)
		if got := seqs(t, s, store.Query{Limit: limit}); !slices.Equal(got, want) {
			t.Fatalf("limit %d: got %d events, first %v", limit, len(got), got[:min(len(got), 3)])
		}
	}
	if got := seqs(t, s, store.Query{Limit: 3, AfterSeq: 2999}); !slices.Equal(got, []uint64{3000}) {
		t.Fatalf("got %v", got)
	}
	if got := seqs(t, s, store.Query{Limit: 2, Kind: "DELETE"}); !slices.Equal(got, []uint64{2995, 3000}) {
		t.Fatalf("got %v", got)
	}
	if value(s.m.corruptLines) != 0 {
		t.Fatal("whole lines reported corrupt")
	}
}

func TestFailedAppendRollsBack(t *testing.T) {
	// A batch that fails halfway (the next segment cannot be created) leaves nothing
	// behind, so the same batch can be retried.
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentBytes: 900}) // three test events to a segment
	appendAll(t, s, mkEvents(1, 2), 2)
	before, _ := os.ReadFile(filepath.Join(dir, segmentName(1)))
	// Event 3 fills the first segment, event 4 needs a new one: block its name.
	batch := mkEvents(3, 8)
	for seq := uint64(3); seq <= 8; seq++ {
		if err := os.Mkdir(filepath.Join(dir, segmentName(seq)), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Append(context.Background(), batch); err == nil {
		t.Fatal("want an error")
	}
	after, _ := os.ReadFile(filepath.Join(dir, segmentName(1)))
	if string(after) != string(before) {
		t.Fatal("the failed batch left bytes behind")
	}
	if seq, _ := s.Last(); seq != 2 {
		t.Fatalf("Last = %d after a failed append", seq)
	}
	for seq := uint64(3); seq <= 8; seq++ {
		os.Remove(filepath.Join(dir, segmentName(seq)))
	}
	if err := s.Append(context.Background(), batch); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if got := seqs(t, s, store.Query{}); !slices.Equal(got, span(1, 8)) {
		t.Fatalf("got %v", got)
	}
	if len(s.segs) < 2 || s.segs[1].first != 4 {
		t.Fatalf("segments %+v", s.segs)
	}
}

func TestReadOnlyBesideWriter(t *testing.T) {
	// What `vigil events` sees while the agent appends and rotates: always a whole prefix
	// of the trail, never a corrupt line.
	dir := t.TempDir()
	w := open(t, dir, Options{SegmentBytes: 4096})
	r, err := Open(dir, Options{ReadOnly: true, Logger: testLogger(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for from := uint64(1); from < 1400; from += 7 {
			if err := w.Append(context.Background(), mkEvents(from, from+6)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	reads := 0
	for running := true; running; reads++ {
		select {
		case <-done:
			running = false
		default:
		}
		got := seqs(t, r, store.Query{})
		if len(got) > 0 && !slices.Equal(got, span(1, got[len(got)-1])) {
			t.Fatalf("read %d: not a whole prefix: %d events ending %v", reads, len(got), got[len(got)-1])
		}
		if last := seqs(t, r, store.Query{Limit: 3}); len(got) >= 3 && len(last) != 3 {
			t.Fatalf("read %d: limit 3 gave %v", reads, last)
		}
	}
	if n := value(r.m.corruptLines); n != 0 {
		t.Fatalf("%v lines reported corrupt", n)
	}
	if got := seqs(t, r, store.Query{}); len(got) != 1400 {
		t.Fatalf("final read: %d events", len(got))
	}
	t.Logf("%d reads beside the writer", reads)
}
