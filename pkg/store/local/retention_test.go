package local

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vigil-db/vigil/pkg/store"
)

type lossRec struct {
	first, last, lost uint64
	detail            string
}

func TestCap(t *testing.T) {
	tests := []struct {
		name        string
		spool       bool
		shipped     uint64 // SetShipped before the second half is appended
		wantReasons []string
		wantLoss    bool
	}{
		{name: "store of record: plain retention", wantReasons: []string{reasonRetention}},
		{name: "spool fully shipped", spool: true, shipped: 30, wantReasons: []string{reasonShipped}},
		{name: "spool consumer behind", spool: true, shipped: 12, wantReasons: []string{reasonShipped, reasonUnshipped}, wantLoss: true},
		{name: "spool consumer down", spool: true, wantReasons: []string{reasonUnshipped}, wantLoss: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Test events encode to ~270 bytes: 4 to a segment, the first 30 under the cap.
			const segBytes, maxBytes = 1100, 9000
			s := open(t, t.TempDir(), Options{SegmentBytes: segBytes, MaxBytes: maxBytes, Spool: tt.spool})
			var losses []lossRec
			s.SetLossHandler(func(first, last, lost uint64, detail string) {
				losses = append(losses, lossRec{first, last, lost, detail})
			})
			appendAll(t, s, mkEvents(1, 30), 1)
			if got := seqs(t, s, store.Query{}); got[0] != 1 {
				t.Fatalf("deleted before the cap was reached: %v", got)
			}
			s.SetShipped(tt.shipped)
			appendAll(t, s, mkEvents(31, 60), 2)

			if s.total > maxBytes {
				t.Errorf("store holds %d bytes, cap %d", s.total, maxBytes)
			}
			got := seqs(t, s, store.Query{})
			if len(got) == 0 || !slices.Equal(got, span(got[0], 60)) || got[0] < 20 {
				t.Fatalf("store must keep a contiguous newest range under the cap, got %v", got)
			}
			var reasons []string
			for _, r := range []string{reasonRetention, reasonShipped, reasonUnshipped} {
				if value(s.m.deletedSegs.WithLabelValues(r)) > 0 {
					reasons = append(reasons, r)
				}
			}
			if !slices.Equal(reasons, tt.wantReasons) {
				t.Errorf("deleted for %v, want %v", reasons, tt.wantReasons)
			}
			if !tt.wantLoss {
				if len(losses) > 0 {
					t.Fatalf("unexpected losses %v", losses)
				}
				return
			}
			// Each report covers everything lost since the shipped floor; their counts add up
			// to the unshipped events that are gone.
			var total uint64
			for i, l := range losses {
				total += l.lost
				if l.first != tt.shipped+1 || i > 0 && l.last <= losses[i-1].last {
					t.Errorf("report %d: %+v", i, l)
				}
				if !strings.Contains(l.detail, fmt.Sprintf("deleted %d events", l.lost)) {
					t.Errorf("detail %q", l.detail)
				}
			}
			last := losses[len(losses)-1]
			if want := got[0] - 1 - tt.shipped; last.last != got[0]-1 || total != want {
				t.Fatalf("losses %v (total %d), want up to seq %d, %d in all", losses, total, got[0]-1, want)
			}
			if n := value(s.m.lostEvents); n != float64(total) {
				t.Errorf("lost events metric %v, want %d", n, total)
			}
		})
	}
}

func TestLossesWaitForHandler(t *testing.T) {
	s := open(t, t.TempDir(), Options{SegmentBytes: 700, MaxBytes: 1400, Spool: true})
	appendAll(t, s, mkEvents(1, 12), 1)
	var got []lossRec
	s.SetLossHandler(func(first, last, lost uint64, detail string) {
		got = append(got, lossRec{first, last, lost, detail})
	})
	if len(got) == 0 || got[0].first != 1 {
		t.Fatalf("losses before the handler was set were not delivered: %v", got)
	}
}

func TestCapNeverDeletesActiveSegment(t *testing.T) {
	// One event bigger than the cap: it stays, and the store stays usable.
	s := open(t, t.TempDir(), Options{SegmentBytes: 100, MaxBytes: 150})
	evs := mkEvents(1, 3)
	evs[2].Statement = strings.Repeat("x", 500)
	appendAll(t, s, evs, 1)
	if got := seqs(t, s, store.Query{}); !slices.Equal(got, []uint64{3}) {
		t.Fatalf("got %v", got)
	}
	if len(s.segs) != 1 {
		t.Fatalf("%d segments", len(s.segs))
	}
}
