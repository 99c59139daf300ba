package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/pkg/store"
)

// TestDiskFullReclaimsShipped fills the filesystem under a store whose cap is above what
// the disk holds. A spool deletes the segments it has shipped to make room, and the append
// succeeds; a store of record deletes nothing (its history is the record) and refuses the
// append with ENOSPC, for the trail to report.
func TestDiskFullReclaimsShipped(t *testing.T) {
	for _, spool := range []bool{true, false} {
		name := "store of record"
		if spool {
			name = "spool"
		}
		t.Run(name, func(t *testing.T) {
			disk := testenv.Tmpfs(t, 1<<20)
			dir := filepath.Join(disk, "store")
			s := open(t, dir, Options{SegmentBytes: 16 << 10, Spool: spool})
			t.Cleanup(func() { s.Close() }) // before the unmount
			appendAll(t, s, mkEvents(1, 400), 20)
			s.SetShipped(300)
			f, err := os.Create(filepath.Join(disk, "filler"))
			if err != nil {
				t.Fatal(err)
			}
			for err == nil {
				_, err = f.Write(make([]byte, 4096))
			}
			f.Close()
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the disk: %v", err)
			}

			err = s.Append(context.Background(), mkEvents(401, 440))
			got := seqs(t, s, store.Query{})
			if !spool {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("append on a full disk: %v, want ENOSPC", err)
				}
				if !slices.Equal(got, span(1, 400)) {
					t.Fatalf("the store of record changed: %d events from %d", len(got), got[0])
				}
				return
			}
			if err != nil {
				t.Fatalf("the spool did not make room: %v", err)
			}
			if got[0] == 1 || got[0] > 301 || !slices.Equal(got, span(got[0], 440)) {
				t.Fatalf("spool holds seqs %d..%d (%d events), want the unshipped 301.. kept", got[0], got[len(got)-1], len(got))
			}
			if value(s.m.deletedSegs.WithLabelValues(reasonShipped)) == 0 {
				t.Error("no deletion counted")
			}
		})
	}
}
