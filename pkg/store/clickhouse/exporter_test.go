package clickhouse

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vigil-db/vigil/internal/testch"
	"github.com/vigil-db/vigil/pkg/audit"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
	"github.com/vigil-db/vigil/pkg/store/local"
)

func openSpool(t testing.TB, dir string) *local.Store {
	t.Helper()
	sp, err := local.Open(dir, local.Options{Spool: true, SyncInterval: 50 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

// fillSpool appends events with seq from..to, in batches.
func fillSpool(t testing.TB, sp *local.Store, from, to uint64) {
	t.Helper()
	var batch []*event.Event
	for s := from; s <= to; s++ {
		e := fullEvent(s)
		e.DBUser = "user" + strconv.Itoa(int(s%7))
		batch = append(batch, e)
		if len(batch) == 5000 || s == to {
			if err := sp.Append(context.Background(), batch); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

// value reads a counter's or gauge's current value.
func value(t testing.TB, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func queryUint(t testing.TB, srv *testch.Server, sql string) uint64 {
	t.Helper()
	out, err := srv.Query(sql)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(out, 10, 64)
	if err != nil {
		t.Fatalf("%s: %q", sql, out)
	}
	return n
}

// requireExactlyOnce checks that ClickHouse holds each seq of the spool once, as seen by
// FINAL reads, the store.Reader and the rollups.
func requireExactlyOnce(t *testing.T, srv *testch.Server, st *Store, sp store.Reader) {
	t.Helper()
	ctx := context.Background()
	var want, got []uint64
	if err := sp.Read(ctx, store.Query{}, func(e *event.Event) error { want = append(want, e.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := st.Read(ctx, store.Query{}, func(e *event.Event) error { got = append(got, e.Seq); return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("ClickHouse has %d events, the spool %d; sets differ", len(got), len(want))
	}
	n := uint64(len(want))
	for _, c := range []struct{ what, sql string }{
		{"FINAL count", "SELECT count() FROM vigil.audit_events FINAL"},
		{"distinct seqs", "SELECT uniqExact(agent_id, seq) FROM vigil.audit_events"},
		{"rollup statements", "SELECT sum(statements) FROM vigil.audit_activity_1m FINAL"},
	} {
		if v := queryUint(t, srv, c.sql); v != n {
			t.Errorf("%s = %d, want %d", c.what, v, n)
		}
	}
	raw := queryUint(t, srv, "SELECT count() FROM vigil.audit_events")
	t.Logf("%d events exactly once (%d physical rows before merges)", n, raw)
}

func TestRetriedBatchCollapses(t *testing.T) {
	ctx := context.Background()
	srv, st := startDB(t, "vigil")
	var batch []*event.Event
	for s := uint64(1); s <= 5000; s++ { // more than one insert block (insertBlockRows)
		batch = append(batch, fullEvent(s))
	}
	for i := 0; i < 3; i++ { // the same batch, as a retry after a lost acknowledgement sends it
		if err := st.Append(ctx, batch); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			// The server squashes the insert's blocks into one: the view made one rollup
			// row per minute of the batch, not one per block.
			rollups := queryUint(t, srv, "SELECT count() FROM vigil.audit_activity_1m")
			minutes := queryUint(t, srv, "SELECT uniqExact(toStartOfMinute(time)) FROM vigil.audit_events")
			if rollups != minutes {
				t.Errorf("one batch made %d rollup rows over %d minutes: the view saw more than one block", rollups, minutes)
			}
		}
	}
	checks := []struct{ sql, want string }{
		{"SELECT count() FROM vigil.audit_events FINAL", "5000"},
		{"SELECT sum(statements), sum(rows_total), sum(pii_columns_total) FROM vigil.audit_activity_1m FINAL", "5000\t-5000\t10000"},
		{"SELECT count() FROM (SELECT db_user, minMerge(first_seen) FROM vigil.audit_actor_pairs GROUP BY agent_id, process_comm, process_exe, db_user, database)", "1"},
	}
	for _, phase := range []string{"before merges", "after OPTIMIZE FINAL"} {
		for _, c := range checks {
			if got, err := srv.Query(c.sql); err != nil || got != c.want {
				t.Errorf("%s: %s = %q (%v), want %q", phase, c.sql, got, err, c.want)
			}
		}
		for _, tbl := range []string{"audit_events", "audit_activity_1m", "audit_actor_pairs"} {
			if _, err := srv.Query("OPTIMIZE TABLE vigil." + tbl + " FINAL"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := queryUint(t, srv, "SELECT count() FROM vigil.audit_events"); got != 5000 {
		t.Errorf("after merges %d physical rows, want 5000", got)
	}
}

// TestOutage writes a live, hash-chained trail into the spool while the exporter ships it;
// ClickHouse is killed for more than 20 seconds in the middle and restarted on the same
// data. Every event arrives once and the chain verifies on ClickHouse.
func TestOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 35 seconds")
	}
	ctx := context.Background()
	srv, st := startDB(t, "vigil")
	dir := t.TempDir()
	sp := openSpool(t, filepath.Join(dir, "spool"))
	defer sp.Close()
	trail, err := audit.New(audit.Config{Host: "h", AgentID: "agent-1", StateDir: filepath.Join(dir, "state"), AnchorInterval: time.Second}, sp, nil)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	x, err := NewExporter(st, sp, ExporterConfig{Dir: filepath.Join(dir, "export"), BatchRows: 5000, BatchInterval: 200 * time.Millisecond,
		MaxBackoff: time.Second}, reg)
	if err != nil {
		t.Fatal(err)
	}
	tctx, stopTrail := context.WithCancel(ctx)
	trailDone := make(chan error, 1)
	go func() { trailDone <- trail.Run(tctx) }()
	xctx, stopExporter := context.WithCancel(ctx)
	xDone := make(chan error, 1)
	go func() { xDone <- x.Run(xctx) }()

	// The workload: 2,000 statements a second for 30 seconds.
	start := time.Now()
	killed, restarted := false, false
	n := 0
	for time.Since(start) < 30*time.Second {
		for i := 0; i < 20; i++ {
			n++
			trail.Emit(&event.Event{Time: time.Now(), Type: event.TypeStatement, Source: event.SourceEBPF, Protocol: event.ProtocolPostgres,
				DBUser: "app", Database: "shop", Kind: "SELECT", Tables: []string{"orders"}, Rows: 1, DurationUS: int64(n % 1000),
				Statement: fmt.Sprintf("SELECT * FROM orders WHERE id = %d", n), Decision: event.DecisionAllow})
		}
		time.Sleep(10 * time.Millisecond)
		if !killed && time.Since(start) > 4*time.Second {
			srv.Kill()
			killed = true
			t.Logf("ClickHouse killed at %v, shipped %d", time.Since(start).Round(time.Millisecond), x.Shipped())
		}
		if !restarted && time.Since(start) > 26*time.Second {
			if value(t, x.m.errors.WithLabelValues("retryable")) == 0 {
				t.Error("no retryable error counted during the outage")
			}
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
			restarted = true
			t.Logf("ClickHouse restarted at %v, shipped %d", time.Since(start).Round(time.Millisecond), x.Shipped())
		}
	}
	stopTrail()
	if err := <-trailDone; err != nil {
		t.Fatal(err)
	}
	last, _ := sp.Last()
	waitFor(t, 60*time.Second, "the exporter to catch up", func() bool { return x.Shipped() == last })
	t.Logf("caught up %v after the restart (%d events)", time.Since(start)-26*time.Second, last)
	stopExporter()
	if err := <-xDone; err != nil {
		t.Fatal(err)
	}
	requireExactlyOnce(t, srv, st, sp)
	if got := value(t, x.m.events); got < float64(n) {
		t.Errorf("vigil_export_events_total = %v, want at least %d", got, n)
	}

	trust, err := audit.LoadTrust(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(ctx, st, trust)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		for _, p := range rep.Problems {
			t.Log(p)
		}
		t.Fatal("the hash chain does not verify on ClickHouse")
	}
}

const childEnv = "VIGIL_CH_EXPORT_CHILD"

// TestExporterChild is the exporter process that TestExporterSIGKILL kills; it runs only
// when that test re-executes the test binary.
func TestExporterChild(t *testing.T) {
	args := strings.Split(os.Getenv(childEnv), "|")
	if len(args) != 3 {
		t.Skip("run by TestExporterSIGKILL")
	}
	dsn, spoolDir, exportDir := args[0], args[1], args[2]
	cfg, err := ParseURL(dsn)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	sp := openSpool(t, spoolDir)
	x, err := NewExporter(st, sp, ExporterConfig{Dir: exportDir, BatchRows: 3000, BatchInterval: 50 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	last, _ := sp.Last()
	go func() {
		for x.Shipped() < last {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	if err := x.Run(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestExporterSIGKILL(t *testing.T) {
	srv, st := startDB(t, "vigil")
	if _, err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	spoolDir, exportDir := filepath.Join(dir, "spool"), filepath.Join(dir, "export")
	const total = 150_000
	sp := openSpool(t, spoolDir)
	fillSpool(t, sp, 1, total)
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	run := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestExporterChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"="+srv.DSN("vigil")+"|"+spoolDir+"|"+exportDir)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	count := func() uint64 { return queryUint(t, srv, "SELECT count() FROM vigil.audit_events") }
	inflight := 0
	for kill := 1; kill <= 3; kill++ {
		before := count()
		cmd := run()
		waitFor(t, 60*time.Second, "the child to ship", func() bool { return count() >= before+20_000 })
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		c, err := loadCursor(filepath.Join(exportDir, "export.cursor"))
		if err != nil {
			t.Fatal(err)
		}
		if c.InflightLast != 0 {
			inflight++
		}
		t.Logf("kill %d: cursor %+v, %d rows in ClickHouse", kill, c, count())
	}
	t.Logf("%d of 3 kills hit a batch in flight", inflight)
	cmd := run()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("final exporter run: %v", err)
	}
	sp = openSpool(t, spoolDir)
	defer sp.Close()
	requireExactlyOnce(t, srv, st, sp)
}

func TestSchemaErrorGoesToDeadLetter(t *testing.T) {
	ctx := context.Background()
	srv, st := startDB(t, "vigil")
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	// Someone changed the table under the agent.
	if _, err := srv.Query("ALTER TABLE vigil.audit_events DROP COLUMN detail"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sp := openSpool(t, filepath.Join(dir, "spool"))
	defer sp.Close()
	fillSpool(t, sp, 1, 10)
	x, err := NewExporter(st, sp, ExporterConfig{Dir: filepath.Join(dir, "export"), BatchInterval: 10 * time.Millisecond}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	xctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- x.Run(xctx) }()
	waitFor(t, 10*time.Second, "the batch to be dead-lettered", func() bool { return x.Shipped() == 10 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "export", fmt.Sprintf("dead-letter-%020d-%020d.jsonl", 1, 10)))
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(b), "\n"); lines != 10 {
		t.Errorf("dead-letter file has %d lines, want 10", lines)
	}
	if got := value(t, x.m.errors.WithLabelValues("schema")); got != 1 {
		t.Errorf("schema errors = %v, want 1", got)
	}
}

func TestBadConfig(t *testing.T) {
	srv := testch.Start(t)
	if _, err := srv.Query("CREATE DATABASE vigil"); err != nil {
		t.Fatal(err)
	}
	closed, err := testch.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, url, want string
	}{
		{"unreachable", fmt.Sprintf("clickhouse://127.0.0.1:%d/vigil?dial_timeout=500ms", closed), "cannot reach the server"},
		{"missing database, user may not create it", fmt.Sprintf("clickhouse://%s:%s@%s/nosuchdb", testch.ReadOnlyUser, testch.ReadOnlyPassword, srv.Addr()),
			`the database "nosuchdb" does not exist and user "vigil_ro" may not create it`},
		{"wrong password", fmt.Sprintf("clickhouse://%s:wrong@%s/vigil", testch.ReadOnlyUser, srv.Addr()), "cannot log in"},
		{"read-only user", fmt.Sprintf("clickhouse://%s:%s@%s/vigil", testch.ReadOnlyUser, testch.ReadOnlyPassword, srv.Addr()), "lacks the privileges"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseURL(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			st, err := Open(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err = st.Migrate(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Migrate: %v, want an error saying %q", err, tc.want)
			}
			t.Log(err)
		})
	}
}

// TestStopDrainsSpool: a stopped exporter finishes the batch in flight and ships the rest
// of the spool within ShutdownTimeout; with ClickHouse away it gives up at the timeout,
// says what it left (count and seq range), and the next start ships it, once.
func TestStopDrainsSpool(t *testing.T) {
	for _, tc := range []struct {
		name      string
		events    uint64
		down      bool // ClickHouse killed before the stop
		unshipped string
	}{
		{name: "backlog in the spool", events: 120_000},
		{name: "ClickHouse away", events: 10, down: true, unshipped: "unshipped_seqs=10 first=1 last=10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, st := startDB(t, "vigil")
			if _, err := st.Migrate(context.Background()); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			sp := openSpool(t, filepath.Join(dir, "spool"))
			defer sp.Close()
			fillSpool(t, sp, 1, tc.events)
			var logs strings.Builder
			cfg := ExporterConfig{Dir: filepath.Join(dir, "export"), BatchRows: 20_000, BatchInterval: 50 * time.Millisecond,
				MaxBackoff: 200 * time.Millisecond, ShutdownTimeout: 20 * time.Second,
				Logger: slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil))}
			if tc.down {
				srv.Kill()
				cfg.ShutdownTimeout = time.Second
			}
			x, err := NewExporter(st, sp, cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, stop := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- x.Run(ctx) }()
			if tc.down {
				time.Sleep(300 * time.Millisecond)
			} else {
				// Stop while the second batch is on its way.
				waitFor(t, 30*time.Second, "the first batch", func() bool { return x.Shipped() >= 20_000 })
			}
			stop()
			stopped := time.Now()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			took := time.Since(stopped)
			if took > cfg.ShutdownTimeout+2*time.Second {
				t.Errorf("Run returned %v after the stop, ShutdownTimeout is %v", took, cfg.ShutdownTimeout)
			}
			t.Logf("Run returned %v after the stop, shipped %d", took.Round(time.Millisecond), x.Shipped())
			if !tc.down {
				if x.Shipped() != tc.events {
					t.Fatalf("shipped %d of %d events at the stop", x.Shipped(), tc.events)
				}
				requireExactlyOnce(t, srv, st, sp)
				return
			}
			if x.Shipped() != 0 {
				t.Fatalf("shipped %d with ClickHouse away", x.Shipped())
			}
			if !strings.Contains(logs.String(), tc.unshipped) {
				t.Fatalf("the stop did not say what it left (%q):\n%s", tc.unshipped, logs.String())
			}
			if err := srv.Restart(); err != nil {
				t.Fatal(err)
			}
			x, err = NewExporter(st, sp, cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, stop = context.WithCancel(context.Background())
			go func() { done <- x.Run(ctx) }()
			waitFor(t, 30*time.Second, "the next start to ship the rest", func() bool { return x.Shipped() == tc.events })
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			requireExactlyOnce(t, srv, st, sp)
		})
	}
}

// syncWriter serializes writes from the exporter's goroutines into one builder.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// TestMigrateCreatesDatabase: on a fresh server the schema's database is created by the
// first migration, as the tables are, when the user may.
func TestMigrateCreatesDatabase(t *testing.T) {
	srv := testch.Start(t)
	st := openStore(t, srv, "fresh")
	applied, err := st.Migrate(context.Background())
	if err != nil {
		t.Fatalf("Migrate on a fresh server: %v", err)
	}
	if len(applied) != int(SchemaVersion()) {
		t.Errorf("applied %v, want every version up to %d", applied, SchemaVersion())
	}
	if n := queryUint(t, srv, "SELECT count() FROM system.tables WHERE database = 'fresh' AND name = 'audit_events'"); n != 1 {
		t.Errorf("fresh.audit_events: %d tables", n)
	}
	if err := st.Append(context.Background(), []*event.Event{fullEvent(1)}); err != nil {
		t.Fatal(err)
	}
}
