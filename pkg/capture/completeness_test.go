package capture

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/internal/testsink"
	"github.com/vigil-db/vigil/pkg/capture/postgres"
	"github.com/vigil-db/vigil/pkg/event"
)

// TestCompletenessUnderPgbench: at full speed, every statement the server executes is
// captured — compared with pg_stat_statements' own count — and the kernel loses nothing.
func TestCompletenessUnderPgbench(t *testing.T) {
	srv := testpg.Start(t, testpg.Options{Config: []string{
		"shared_preload_libraries = 'pg_stat_statements'", "pg_stat_statements.track_utility = on", "autovacuum = off",
	}})
	if _, err := srv.Psql("postgres", "CREATE EXTENSION pg_stat_statements"); err != nil {
		t.Fatal(err)
	}
	pgbench(t, srv, "-i", "-q", "-s", "2")
	// Unix capture always on: the marker statements go through psql over the socket, and
	// on demand a short session can end before capture attaches (TestUnixOnDemand).
	c, col := startCapture(t, srv, func(cfg *Config) { cfg.UnixAlwaysOn = true })

	for _, sc := range []struct {
		name string
		args []string
	}{
		{"select-only c8", []string{"-S", "-c", "8"}},
		{"tpcb-like c8", []string{"-c", "8"}},
		{"select-only c64", []string{"-S", "-c", "64"}},
		{"tpcb-like c64 extended", []string{"-c", "64", "-M", "extended"}},
	} {
		t.Run(sc.name, func(t *testing.T) {
			mark := fmt.Sprintf("reset-%d", time.Now().UnixNano())
			if _, err := srv.Psql("postgres", "SELECT pg_stat_statements_reset(), '"+mark+"'"); err != nil {
				t.Fatal(err)
			}
			col.Wait(t, 1, "reset", testsink.StatementContains(mark))
			start := len(col.Events())
			pgbench(t, srv, append([]string{"-n", "-j", "2", "-T", "3"}, sc.args...)...)
			out, err := srv.Psql("postgres", "SELECT sum(calls) FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'")
			if err != nil {
				t.Fatal(err)
			}
			executed, _ := strconv.Atoi(strings.TrimSpace(out))
			var captured int
			deadline := time.Now().Add(15 * time.Second)
			for {
				captured = 0
				for _, e := range col.Events()[start:] {
					if e.Type == event.TypeStatement && strings.HasSuffix(e.ServerAddr, strconv.Itoa(srv.Port)) && !strings.Contains(e.Statement, "pg_stat_statements") {
						captured++
					}
				}
				if captured >= executed || time.Now().After(deadline) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			st := c.tracer.Stats()
			lost := st.TCX.LostRecords + st.TLS.LostRecords + st.Unix.LostRecords + st.Conn.LostRecords
			t.Logf("%s: executed %d, captured %d, kernel losses %d", sc.name, executed, captured, lost)
			if executed < 1000 {
				t.Fatalf("pgbench ran only %d statements", executed)
			}
			if captured != executed || lost != 0 {
				t.Errorf("captured %d of %d statements executed, %d records lost in the kernel", captured, executed, lost)
			}
		})
	}
}

// TestRingOverflowWritesGap: when the reader falls behind and the ring fills, the trail gets
// a gap event that says how many records were lost, and the metric counts them.
func TestRingOverflowWritesGap(t *testing.T) {
	testenv.RequireBPF(t)
	srv := testpg.Start(t)
	pgbench(t, srv, "-i", "-q", "-s", "1")
	var gaps, lostInGaps atomic.Uint64
	var loaded atomic.Bool
	slow := event.SinkFunc(func(e *event.Event) {
		if e.Type == event.TypeGap {
			gaps.Add(1)
			lostInGaps.Add(e.Lost)
			return
		}
		if !loaded.Load() {
			time.Sleep(2 * time.Millisecond) // a reader this slow cannot keep up
		}
	})
	c, err := New(Config{Host: "test", Discover: true, Interval: 200 * time.Millisecond, RingBytes: 64 << 10,
		Decoder: postgres.Config{}}, slow, nil, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	for !(c.Ready() && c.isServer(netipPort(srv.Port))) {
		time.Sleep(20 * time.Millisecond)
	}
	pgbench(t, srv, "-n", "-S", "-c", "8", "-j", "2", "-T", "2")
	loaded.Store(true)
	time.Sleep(500 * time.Millisecond) // the reader catches up and reports
	st := c.tracer.Stats()             // before Run returns and closes the tracer
	lost := st.TCX.LostRecords + st.TLS.LostRecords + st.Unix.LostRecords + st.Conn.LostRecords
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if lost == 0 {
		t.Fatal("the ring never overflowed; the test proves nothing")
	}
	// Losses after the snapshot above are reported too, so the gap events may say more.
	if gaps.Load() == 0 || lostInGaps.Load() < lost {
		t.Errorf("kernel lost %d records; gap events: %d reporting %d lost", lost, gaps.Load(), lostInGaps.Load())
	}
}

func pgbench(t *testing.T, srv *testpg.Server, args ...string) {
	t.Helper()
	cmd := exec.Command("pgbench", append([]string{"-h", srv.Host, "-p", strconv.Itoa(srv.Port), "-U", "postgres"}, append(args, "postgres")...)...)
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pgbench %v: %v\n%s", args, err, out)
	}
}
