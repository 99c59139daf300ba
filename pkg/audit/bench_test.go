package audit

import (
	"context"
	"crypto/sha256"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/pkg/event"

	"github.com/vigil-db/vigil/pkg/store/local"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkTrail measures Emit → store: the whole hot path (seal: encode + hash; batched
// append with fsync) on the real filesystem, reporting events/s and the CPU time of the
// whole process per event.
func BenchmarkTrail(b *testing.B) {
	for _, sync := range []time.Duration{0, 100 * time.Millisecond} {
		b.Run(fmt.Sprintf("sync_interval=%s", sync), func(b *testing.B) {
			st, err := local.Open(b.TempDir(), local.Options{SyncInterval: sync}, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer st.Close()
			tr, err := New(Config{Host: "db1", AgentID: "agent-1", StateDir: b.TempDir(), QueueSize: b.N + 1, Logger: testLogger(b)}, st, prometheus.NewRegistry())
			if err != nil {
				b.Fatal(err)
			}
			evs := make([]*event.Event, b.N)
			for i := range evs {
				evs[i] = stmt(i)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			b.ResetTimer()
			cpu0, t0 := cpuTime(), time.Now()
			go func() { done <- tr.Run(ctx) }()
			for _, e := range evs {
				tr.Emit(e)
			}
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			wall, cpu := time.Since(t0), cpuTime()-cpu0
			b.StopTimer()
			if d := tr.dropped.Load(); d > 0 {
				b.Fatalf("%d dropped", d)
			}
			b.ReportMetric(float64(b.N)/wall.Seconds(), "events/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/event")
		})
	}
}

// BenchmarkSeal is the per-event CPU of the writer without I/O: encode, hash, splice.
func BenchmarkSeal(b *testing.B) {
	st, err := local.Open(b.TempDir(), local.Options{}, nil) // never written: seal does no I/O
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	tr, err := New(Config{Host: "db1", AgentID: "agent-1", StateDir: b.TempDir()}, st, nil)
	if err != nil {
		b.Fatal(err)
	}
	e := stmt(1)
	b.ReportAllocs()
	for b.Loop() {
		tr.arena = tr.arena[:0]
		if _, err := tr.seal(e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncode compares the two encoders of the same bytes; BenchmarkHash is the rest
// of sealing an event.
func BenchmarkEncode(b *testing.B) {
	e := stmt(1)
	e.Seq, e.Host, e.AgentID = 123456, "db1", "agent-1"
	e.PrevHash = fmt.Sprintf("%064x", 1)
	b.Run("encoding_json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := e.Canonical(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			var err error
			if buf, err = appendCanonical(buf[:0], e); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkHash(b *testing.B) {
	e := stmt(1)
	e.Seq, e.Host, e.AgentID = 123456, "db1", "agent-1"
	e.PrevHash = fmt.Sprintf("%064x", 1)
	line, _ := e.Canonical()
	b.SetBytes(int64(len(line)))
	for b.Loop() {
		sha256.Sum256(line)
	}
}

// BenchmarkEmit is what capture pays per event: the enqueue, from parallel goroutines.
func BenchmarkEmit(b *testing.B) {
	st, err := local.Open(b.TempDir(), local.Options{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	tr, err := New(Config{Host: "db1", AgentID: "agent-1", StateDir: b.TempDir(), QueueSize: 1 << 22}, st, nil)
	if err != nil {
		b.Fatal(err)
	}
	e := stmt(1)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tr.Emit(e)
		}
	})
	b.StopTimer()
	for len(tr.queue) > 0 { // leave no references for the next run
		<-tr.queue
	}
}
