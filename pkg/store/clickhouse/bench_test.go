package clickhouse

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/pkg/event"
)

// BenchmarkInsert: one exporter's insert rate into a local 18.16, one op being one batch
// of 50,000 fully populated events. Reports events/s and batch latency p50/p99.
//
//	go test -run '^$' -bench Insert -benchtime 20x ./pkg/store/clickhouse/
func BenchmarkInsert(b *testing.B) {
	const batchRows = 50_000
	_, st := startDB(b, "vigil")
	ctx := context.Background()
	if _, err := st.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	batch := make([]*event.Event, batchRows)
	seq := uint64(0)
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		for i := range batch {
			seq++
			batch[i] = fullEvent(seq)
		}
		start := time.Now()
		if err := st.Append(ctx, batch); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	report(b, lat, batchRows)
}

// BenchmarkReplay is the end-to-end rate, spool to ClickHouse: the exporter draining a
// spool of 500,000 events (a backlog, so it runs flat out: the most it can sustain) into
// an empty database on a local 18.16, with the default 50,000-event batches. One op is one
// full replay. Reports events/s over the whole replay and the latency of the batch
// inserts (p50/p99).
//
//	go test -run '^$' -bench Replay -benchtime 3x ./pkg/store/clickhouse/
func BenchmarkReplay(b *testing.B) {
	const total = 500_000
	srv, _ := startDB(b, "vigil")
	dir := b.TempDir()
	sp := openSpool(b, filepath.Join(dir, "spool"))
	defer sp.Close()
	fillSpool(b, sp, 1, total)
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		db := fmt.Sprintf("replay%d", i)
		if _, err := srv.Query("CREATE DATABASE " + db); err != nil {
			b.Fatal(err)
		}
		st := openStore(b, srv, db)
		if _, err := st.Migrate(context.Background()); err != nil {
			b.Fatal(err)
		}
		x, err := NewExporter(st, sp, ExporterConfig{Dir: filepath.Join(dir, db)}, nil)
		if err != nil {
			b.Fatal(err)
		}
		x.m.batch = &latencies{Histogram: x.m.batch, d: &lat}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		b.StartTimer()
		go func() { done <- x.Run(ctx) }()
		for x.Shipped() < total {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(total*b.N)/b.Elapsed().Seconds(), "events/s")
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Milliseconds()), "p99-ms")
}

// latencies records what the exporter observes into its batch-duration histogram.
type latencies struct {
	prometheus.Histogram
	d *[]time.Duration
}

func (l *latencies) Observe(seconds float64) {
	*l.d = append(*l.d, time.Duration(seconds*float64(time.Second)))
	l.Histogram.Observe(seconds)
}

func report(b *testing.B, lat []time.Duration, perOp int) {
	slices.Sort(lat)
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	b.ReportMetric(float64(perOp*len(lat))/sum.Seconds(), "events/s")
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Milliseconds()), "p99-ms")
}
