package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
	"github.com/vigil-db/vigil/pkg/store/local"
)

func stmt(i int) *event.Event {
	uid := int32(1000)
	return &event.Event{
		Time:        time.Date(2026, 11, 25, 10, 0, 0, i, time.UTC),
		Type:        event.TypeStatement,
		Source:      event.SourceEBPF,
		Protocol:    event.ProtocolPostgres,
		DBUser:      "alice",
		Database:    "shop",
		Application: "psql",
		ClientAddr:  "10.1.2.3:51234",
		ServerAddr:  "10.1.2.4:5432",
		SessionID:   fmt.Sprintf("s%d", i%7),
		BackendPID:  4242,
		Process:     &event.Process{PID: 777, UID: &uid, Comm: "psql", Exe: "/usr/bin/psql"},
		Statement:   fmt.Sprintf("SELECT id, email FROM customers WHERE id = %d AND name = 'x'", i),
		Params:      []string{"42"},
		Fingerprint: "a1b2c3d4",
		Kind:        "SELECT",
		Tables:      []string{"customers"},
		Rows:        1,
		DurationUS:  350,
		Decision:    event.DecisionAllow,
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// env is a trail over a real local store in temp directories.
type env struct {
	t        testing.TB
	stateDir string
	storeDir string
	opts     local.Options
	st       *local.Store
	tr       *Trail
	reg      *prometheus.Registry
	cancel   context.CancelFunc
	done     chan error
}

func newEnv(t testing.TB, cfg Config, opts local.Options) *env {
	return newEnvIn(t, t.TempDir(), cfg, opts)
}

// newEnvIn is newEnv with the state and store directories under base.
func newEnvIn(t testing.TB, base string, cfg Config, opts local.Options) *env {
	e := &env{t: t, stateDir: filepath.Join(base, "state"), storeDir: filepath.Join(base, "store"), opts: opts}
	e.open(cfg)
	return e
}

// open opens the store and a trail over it (again, after stop: a restart).
func (e *env) open(cfg Config) {
	e.t.Helper()
	e.reg = prometheus.NewRegistry()
	e.opts.Logger = testLogger(e.t)
	st, err := local.Open(e.storeDir, e.opts, e.reg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.st = st
	cfg.StateDir = e.stateDir
	if cfg.AgentID == "" {
		cfg.Host, cfg.AgentID = "db1", "agent-1"
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(e.t)
	}
	tr, err := New(cfg, st, e.reg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.tr = tr
}

func (e *env) start() {
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- e.tr.Run(ctx) }()
}

// stop shuts the trail down (it flushes) and closes the store.
func (e *env) stop() {
	e.t.Helper()
	e.cancel()
	if err := <-e.done; err != nil {
		e.t.Fatal(err)
	}
	if err := e.st.Close(); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) events() []*event.Event {
	e.t.Helper()
	r, err := local.Open(e.storeDir, local.Options{ReadOnly: true, Logger: testLogger(e.t)}, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*event.Event
	if err := r.Read(context.Background(), store.Query{}, func(ev *event.Event) error {
		out = append(out, ev)
		return nil
	}); err != nil {
		e.t.Fatal(err)
	}
	return out
}

func (e *env) verify() *Report {
	e.t.Helper()
	trust, err := LoadTrust(e.stateDir)
	if err != nil {
		e.t.Fatal(err)
	}
	r, err := local.Open(e.storeDir, local.Options{ReadOnly: true, Logger: testLogger(e.t)}, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	rep, err := Verify(context.Background(), r, trust)
	if err != nil {
		e.t.Fatal(err)
	}
	return rep
}

func metricValue(t testing.TB, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				if !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
					return l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}) {
					continue metric
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

func countType(evs []*event.Event, typ event.Type) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

func requireOK(t *testing.T, rep *Report) {
	t.Helper()
	if !rep.OK() {
		for _, p := range rep.Problems {
			t.Log(p)
		}
		t.Fatal("the trail does not verify")
	}
}

func TestTrailWritesChain(t *testing.T) {
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast_encoder=%v", fast), func(t *testing.T) { testTrailWritesChain(t, fast) })
	}
}

func testTrailWritesChain(t *testing.T, fast bool) {
	e := newEnv(t, Config{}, local.Options{})
	e.tr.fast = fast
	e.start()
	// Several goroutines at once, as capture and the proxies are.
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 250 {
				e.tr.Emit(stmt(g*1000 + i))
			}
		})
	}
	wg.Wait()
	e.stop()

	evs := e.events()
	if n := countType(evs, event.TypeStatement); n != 1000 {
		t.Fatalf("%d statements stored, want 1000", n)
	}
	if countType(evs, event.TypeAnchor) == 0 || evs[len(evs)-1].Type != event.TypeAnchor {
		t.Fatal("the trail must end with an anchor after shutdown")
	}
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) || ev.Host != "db1" || ev.AgentID != "agent-1" {
			t.Fatalf("event %d: seq %d host %q agent %q", i, ev.Seq, ev.Host, ev.AgentID)
		}
	}
	rep := e.verify()
	requireOK(t, rep)
	if len(rep.Problems) != 0 {
		t.Fatalf("unexpected warnings: %v", rep.Problems)
	}
	if s := rep.Chains[0]; s.SignedTo != uint64(len(evs)) || s.Events != uint64(len(evs)) {
		t.Fatalf("summary %+v", s)
	}
	if got := metricValue(t, e.reg, "vigil_events_total", "type", "statement"); got != 1000 {
		t.Fatalf("vigil_events_total{type=statement} = %v", got)
	}
	if metricValue(t, e.reg, "vigil_store_write_seconds") == 0 {
		t.Fatal("no store writes observed")
	}
	info, err := os.Stat(filepath.Join(e.stateDir, KeyFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", info, err)
	}
}

func TestRedaction(t *testing.T) {
	upper := func(s string) string { return strings.ToUpper(s) }
	tests := []struct {
		name       string
		cfg        Config
		wantStmt   string
		wantParams []string
	}{
		{"as is", Config{}, "select 1", []string{"p"}},
		{"drop params", Config{DropParams: true}, "select 1", nil},
		{"redact", Config{Redact: upper}, "SELECT 1", []string{"p"}},
		{"both", Config{Redact: upper, DropParams: true}, "SELECT 1", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.cfg, local.Options{})
			e.start()
			ev := stmt(1)
			ev.Statement, ev.Params = "select 1", []string{"p"}
			e.tr.Emit(ev)
			e.stop()
			var got *event.Event
			for _, x := range e.events() { // after the chain event, and maybe an anchor
				if x.Type == event.TypeStatement {
					got = x
				}
			}
			if got == nil {
				t.Fatal("the statement was not stored")
			}
			if got.Statement != tt.wantStmt || !slices.Equal(got.Params, tt.wantParams) {
				t.Fatalf("stored %q %v", got.Statement, got.Params)
			}
			requireOK(t, e.verify())
		})
	}
}

func TestTee(t *testing.T) {
	var out bytes.Buffer
	e := newEnv(t, Config{Tee: &out}, local.Options{})
	e.start()
	for i := range 20 {
		e.tr.Emit(stmt(i))
	}
	e.stop()
	var want bytes.Buffer
	for _, ev := range e.events() {
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		want.Write(append(b, '\n'))
	}
	if out.String() != want.String() {
		t.Fatalf("tee:\n%s\nstore:\n%s", out.String(), want.String())
	}
}

func TestRestartContinuesChain(t *testing.T) {
	e := newEnv(t, Config{}, local.Options{SegmentBytes: 4096})
	for boot := range 3 {
		if boot > 0 {
			e.open(Config{})
		}
		e.start()
		for i := range 30 {
			e.tr.Emit(stmt(i))
		}
		e.stop()
	}
	evs := e.events()
	if n := countType(evs, event.TypeStatement); n != 90 {
		t.Fatalf("%d statements", n)
	}
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
	}
	rep := e.verify()
	requireOK(t, rep)
	if len(rep.Problems) != 0 {
		t.Fatalf("warnings: %v", rep.Problems)
	}
}

func TestQueueOverflowWritesGap(t *testing.T) {
	e := newEnv(t, Config{QueueSize: 10}, local.Options{})
	// The writer is not running yet: the queue fills and the rest is dropped.
	for i := range 25 {
		e.tr.Emit(stmt(i))
	}
	if got := metricValue(t, e.reg, "vigil_store_backlog_events"); got != 10 {
		t.Fatalf("backlog %v, want 10", got)
	}
	e.start()
	if err := e.st.WaitAfter(t.Context(), 10); err != nil { // the gap and the 10 queued
		t.Fatal(err)
	}
	for i := range 5 {
		e.tr.Emit(stmt(100 + i))
	}
	e.stop()

	evs := e.events()
	gaps := slices.DeleteFunc(slices.Clone(evs), func(ev *event.Event) bool { return ev.Type != event.TypeGap })
	if len(gaps) != 1 || gaps[0].Lost != 15 || !strings.Contains(gaps[0].Detail, "15 events dropped") {
		for _, g := range gaps {
			t.Logf("gap %+v", *g)
		}
		t.Fatalf("%d gap events", len(gaps))
	}
	if evs[0].Type != event.TypeGap {
		t.Fatal("the gap must come before the events queued after it")
	}
	if n := countType(evs, event.TypeStatement); n != 15 {
		t.Fatalf("%d statements stored, want 15", n)
	}
	if got := metricValue(t, e.reg, "vigil_audit_dropped_total"); got != 15 {
		t.Fatalf("vigil_audit_dropped_total = %v", got)
	}
	rep := e.verify()
	requireOK(t, rep)
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != KindGap || rep.Problems[0].Seq != gaps[0].Seq {
		t.Fatalf("want one gap warning, got %v", rep.Problems)
	}
}

func TestStoreLossWritesGap(t *testing.T) {
	// A spool with a tiny cap whose consumer ships into a second store, goes down while the
	// trail keeps writing (the spool deletes unshipped events), and comes back. What
	// reached the destination must verify: every hole is accounted for by a gap event.
	e := newEnv(t, Config{BatchSize: 5, BatchWait: -1}, local.Options{SegmentBytes: 3000, MaxBytes: 9000, Spool: true})
	dest, err := local.Open(t.TempDir(), local.Options{Logger: testLogger(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dest.Close()
	var cursor uint64
	ship := func() {
		t.Helper()
		var batch []*event.Event
		if err := e.st.Read(t.Context(), store.Query{AfterSeq: cursor}, func(ev *event.Event) error {
			batch = append(batch, ev)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(batch) == 0 {
			return
		}
		if err := dest.Append(t.Context(), batch); err != nil {
			t.Fatal(err)
		}
		cursor = batch[len(batch)-1].Seq
		e.st.SetShipped(cursor)
	}

	e.start()
	emit := func(from, to int) {
		for i := from; i < to; i++ {
			e.tr.Emit(stmt(i))
			if i%5 == 4 {
				time.Sleep(time.Millisecond) // several batches, so the cap acts along the way
			}
		}
	}
	emit(0, 20)
	if err := e.st.WaitAfter(t.Context(), 19); err != nil {
		t.Fatal(err)
	}
	ship()
	emit(20, 300) // the consumer is down
	e.cancel()
	if err := <-e.done; err != nil {
		t.Fatal(err)
	}
	ship() // it is back
	e.st.Close()

	var got []*event.Event
	dest.Read(t.Context(), store.Query{}, func(ev *event.Event) error {
		got = append(got, ev)
		return nil
	})
	var lost, holes, prev uint64
	for _, ev := range got {
		if ev.Type == event.TypeGap {
			lost += ev.Lost
		}
		holes += ev.Seq - prev - 1
		prev = ev.Seq
	}
	// At least: events the consumer had read but not yet acknowledged with SetShipped when
	// the cap deleted them count as lost though they arrived — over-reporting, never under.
	if holes == 0 || lost < holes {
		t.Fatalf("gap events account for %d lost events; the destination misses %d", lost, holes)
	}
	trust, err := LoadTrust(e.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(t.Context(), dest, trust)
	if err != nil {
		t.Fatal(err)
	}
	requireOK(t, rep)
	if rep.Chains[0].Lost != lost {
		t.Fatalf("report: %+v", rep.Chains[0])
	}
}

func TestLostTailOnRestart(t *testing.T) {
	// A machine crash under a relaxed fsync policy: the head file says more than the store
	// kept. The restart records the loss and the trail still verifies.
	e := newEnv(t, Config{}, local.Options{})
	e.start()
	for i := range 20 {
		e.tr.Emit(stmt(i))
	}
	e.stop()
	evs := e.events()
	head, err := ReadHead(filepath.Join(e.stateDir, HeadFile))
	if err != nil {
		t.Fatal(err)
	}
	cutTo := evs[11].Seq // keep seqs 1..12
	rewriteLines(t, e.storeDir, func(lines []string) []string { return lines[:cutTo] })

	e.open(Config{})
	e.start()
	e.tr.Emit(stmt(99))
	e.stop()
	evs = e.events()
	gap := evs[cutTo]
	wantDetail := fmt.Sprintf("events seq %d..%d lost", cutTo+1, head.Seq)
	if gap.Type != event.TypeGap || gap.Seq != head.Seq+1 || gap.Lost != head.Seq-cutTo || !strings.Contains(gap.Detail, wantDetail) {
		t.Fatalf("after the cut: %+v", gap)
	}
	rep := e.verify()
	requireOK(t, rep)
}

func TestAnchorInterval(t *testing.T) {
	e := newEnv(t, Config{AnchorInterval: time.Hour, BatchWait: -1}, local.Options{})
	e.start()
	for i := range 50 {
		e.tr.Emit(stmt(i))
		time.Sleep(100 * time.Microsecond)
	}
	e.stop()
	evs := e.events()
	// One anchor when the first batch is written (none before), one on shutdown.
	if n := countType(evs, event.TypeAnchor); n != 2 {
		t.Fatalf("%d anchors, want 2", n)
	}
	requireOK(t, e.verify())
}

func TestAnchorDueWhileIdle(t *testing.T) {
	e := newEnv(t, Config{AnchorInterval: 30 * time.Millisecond, BatchWait: -1}, local.Options{})
	e.start()
	e.tr.Emit(stmt(1))
	time.Sleep(50 * time.Millisecond)
	e.tr.Emit(stmt(2))
	time.Sleep(100 * time.Millisecond) // the anchor for stmt 2 comes without new events
	evs := e.events()
	e.stop()
	if len(evs) < 4 || evs[len(evs)-1].Type != event.TypeAnchor {
		t.Fatalf("no anchor written while idle: %d events", len(evs))
	}
}

func TestKeyPersists(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, PubKeyFile))
	k2, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Fatal("a second start made a new key")
	}
	pub, err := LoadPublicKey(filepath.Join(dir, PubKeyFile))
	if err != nil || !pub.Equal(k1.Public().(ed25519.PublicKey)) {
		t.Fatalf("public key not restored: %v", err)
	}
}
