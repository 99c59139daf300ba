package clickhouse

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/internal/testch"
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
// full replay. Reports events/s over the whole replay, the latency of the batch inserts
// (p50/p99), and the CPU time per event of this process (the exporter: spool decoding,
// columns, encoding) and of the ClickHouse server (insert, views, merges) during the
// replays: on a shared machine the rate is noisy, CPU time much less so, and their sum
// bounds the rate a machine can reach (cores / CPU per event).
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
	var agentCPU, serverCPU time.Duration
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
		a0, s0 := selfCPU(b), processCPU(b, srv)
		b.StartTimer()
		go func() { done <- x.Run(ctx) }()
		for x.Shipped() < total {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		agentCPU += selfCPU(b) - a0
		serverCPU += processCPU(b, srv) - s0
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(total*b.N)/b.Elapsed().Seconds(), "events/s")
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Milliseconds()), "p99-ms")
	b.ReportMetric(float64(agentCPU.Microseconds())/float64(total*b.N), "agent-cpu-µs/event")
	b.ReportMetric(float64(serverCPU.Microseconds())/float64(total*b.N), "server-cpu-µs/event")
}

// selfCPU is the CPU time (user and system) this process has used.
func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// processCPU is the CPU time the ClickHouse server process has used, from /proc. The
// server is found by its config file, which is in its own temp directory.
func processCPU(b *testing.B, srv *testch.Server) time.Duration {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmd, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(cmd), "--config-file="+srv.Dir) {
			continue
		}
		stat, err := os.ReadFile(filepath.Join(filepath.Dir(p), "stat"))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command name; utime and stime are the 14th and
		// 15th of the line, in clock ticks (100 a second on Linux).
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		return time.Duration(ut+st) * 10 * time.Millisecond
	}
	b.Fatal("ClickHouse server process not found")
	return 0
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
