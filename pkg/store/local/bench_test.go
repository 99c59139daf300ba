package local

import (
	"context"
	"testing"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
)

// benchStore fills a store with n test events in batches of 1000.
func benchStore(b *testing.B, n uint64) *Store {
	s, err := Open(b.TempDir(), Options{SyncInterval: 1 << 40}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	for from := uint64(1); from <= n; from += 1000 {
		if err := s.Append(context.Background(), mkEvents(from, min(from+999, n))); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// BenchmarkAppend is the store's cost per event (encoding/json included, fsync not).
func BenchmarkAppend(b *testing.B) {
	s, err := Open(b.TempDir(), Options{SyncInterval: 1 << 40}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	evs := mkEvents(1, 1000)
	b.ResetTimer()
	for i := range b.N {
		for j, e := range evs {
			e.Seq = uint64(i*1000 + j + 1)
		}
		if err := s.Append(context.Background(), evs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/event")
}

// BenchmarkRead is a spool consumer's cost: decoding every event, and finding its place.
func BenchmarkRead(b *testing.B) {
	const n = 100_000
	s := benchStore(b, n)
	b.Run("all", func(b *testing.B) {
		for b.Loop() {
			count := 0
			s.Read(context.Background(), store.Query{}, func(*event.Event) error { count++; return nil })
			if count != n {
				b.Fatalf("read %d", count)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/event")
	})
	b.Run("after_seq_near_end", func(b *testing.B) {
		for b.Loop() {
			count := 0
			s.Read(context.Background(), store.Query{AfterSeq: n - 10}, func(*event.Event) error { count++; return nil })
			if count != 10 {
				b.Fatalf("read %d", count)
			}
		}
	})
	b.Run("limit_10", func(b *testing.B) {
		for b.Loop() {
			s.Read(context.Background(), store.Query{Limit: 10}, func(*event.Event) error { return nil })
		}
	})
}
