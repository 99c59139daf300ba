package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store/local"
)

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// closeOnFailure stops the trail and closes the store of a test that failed midway, so
// that its tmpfs can be unmounted.
func closeOnFailure(t *testing.T, e *env) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		e.cancel()
		select {
		case <-e.done:
		case <-time.After(5 * time.Second): // Run returned already, to a stop that failed
		}
		e.st.Close()
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDiskFull fills the filesystem under the store and the state directory while the trail
// writes. The trail must say so (a log line saying what to do, a metric, its store state
// for readiness), keep its memory bounded by numbering what it cannot keep as lost rather
// than retrying one batch while everything else is dropped uncounted in the chain, and once
// space returns write a gap event for exactly that seq range, which the signed head covers
// and Verify reports as recorded loss.
func TestDiskFull(t *testing.T) {
	base := testenv.Tmpfs(t, 4<<20)
	var (
		logs    syncBuffer
		stateMu sync.Mutex
		stateOK = true
		state   string
	)
	storeState := func() (bool, string) {
		stateMu.Lock()
		defer stateMu.Unlock()
		return stateOK, state
	}
	const queue = 512
	cfg := Config{
		QueueSize: queue, BatchSize: 64,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(&logs, t.Output()), nil)),
		StoreState: func(ok bool, detail string) {
			stateMu.Lock()
			stateOK, state = ok, detail
			stateMu.Unlock()
		},
	}
	e := newEnvIn(t, base, cfg, local.Options{})
	e.start()
	closeOnFailure(t, e)
	emitted := 0
	emit := func(n int) {
		for range n {
			e.tr.Emit(stmt(emitted))
			emitted++
		}
	}
	stored := func() uint64 { seq, _ := e.st.Last(); return seq }

	emit(200)
	waitFor(t, "the first events", func() bool { return stored() >= 200 })
	testenv.FillDisk(t, filepath.Join(base, "filler"))
	atFull := stored()
	waitFor(t, "the trail to let events go", func() bool {
		emit(64)
		time.Sleep(time.Millisecond)
		return metricValue(t, e.reg, "vigil_store_disk_full") == 1 &&
			metricValue(t, e.reg, "vigil_audit_lost_events_total") > 4*queue
	})
	if got := metricValue(t, e.reg, "vigil_store_backlog_events"); got > queue {
		t.Errorf("backlog %v, beyond the queue of %d", got, queue)
	}
	if s := stored(); s > atFull+uint64(cfg.BatchSize)+2 {
		t.Errorf("the store grew from seq %d to %d on a full disk", atFull, s)
	}
	if l := logs.String(); !strings.Contains(l, "disk is full") || !strings.Contains(l, "free space") {
		t.Errorf("no log line saying the disk is full and what to do:\n%s", l)
	}
	if ok, detail := storeState(); ok || !strings.Contains(detail, "disk full") || !strings.Contains(detail, "free space") ||
		!strings.Contains(detail, "let go") {
		t.Errorf("store state while the disk is full: ok %v, %q", ok, detail)
	}

	if err := os.Remove(filepath.Join(base, "filler")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the store to write again", func() bool {
		emit(1)
		time.Sleep(time.Millisecond)
		return metricValue(t, e.reg, "vigil_store_disk_full") == 0
	})
	if ok, detail := storeState(); !ok {
		t.Errorf("store state once space returned: %q", detail)
	}
	emit(100)
	e.stop()

	evs := e.events()
	var statements, lost uint64
	var diskGaps []*event.Event
	for _, ev := range evs {
		switch ev.Type {
		case event.TypeStatement:
			statements++
		case event.TypeGap:
			lost += ev.Lost
			if strings.Contains(ev.Detail, "disk") {
				diskGaps = append(diskGaps, ev)
			}
		}
	}
	if statements+lost != uint64(emitted) {
		t.Errorf("%d statements stored and %d recorded lost, %d emitted", statements, lost, emitted)
	}
	if len(diskGaps) != 1 {
		t.Fatalf("%d gap events for the full disk, want 1", len(diskGaps))
	}
	g := diskGaps[0]
	m := regexp.MustCompile(`seq (\d+)\.\.(\d+)`).FindStringSubmatch(g.Detail)
	if m == nil {
		t.Fatalf("the gap event names no seq range: %q", g.Detail)
	}
	from, _ := strconv.ParseUint(m[1], 10, 64)
	to, _ := strconv.ParseUint(m[2], 10, 64)
	if g.Lost != to-from+1 || float64(g.Lost) != metricValue(t, e.reg, "vigil_audit_lost_events_total") || g.Seq != to+1 {
		t.Errorf("gap seq %d, lost %d, for seqs %d..%d (metric %v)", g.Seq, g.Lost, from, to,
			metricValue(t, e.reg, "vigil_audit_lost_events_total"))
	}
	if last := evs[len(evs)-1]; last.Type != event.TypeAnchor {
		t.Errorf("the trail ends with a %s, not an anchor", last.Type)
	}

	rep := e.verify()
	requireOK(t, rep)
	for _, p := range rep.Problems {
		t.Log(p)
		if p.Kind != KindGap {
			t.Errorf("unexpected finding: %v", p)
		}
	}
	a := rep.Chains[0]
	if a.Lost != lost || a.SignedTo != a.LastSeq {
		t.Errorf("verify: %+v, want %d lost and signed to the end", a, lost)
	}
}

// TestDiskFullAtStop stops the trail while the disk is still full, as an operator's
// restart would: the trail gives up its reserve file and records, in that space, one gap
// event for everything it could not store and an anchor, and a restart once space is back
// continues the chain.
func TestDiskFullAtStop(t *testing.T) {
	base := testenv.Tmpfs(t, 4<<20)
	const queue = 512
	cfg := Config{QueueSize: queue, BatchSize: 64}
	e := newEnvIn(t, base, cfg, local.Options{})
	reserve := filepath.Join(e.stateDir, ReserveFile)
	if info, err := os.Stat(reserve); err != nil || info.Size() != reserveBytes {
		t.Fatalf("no reserve file: %v", err)
	}
	e.start()
	closeOnFailure(t, e)
	emitted := 0
	emit := func(n int) {
		for range n {
			e.tr.Emit(stmt(emitted))
			emitted++
		}
	}
	emit(200)
	waitFor(t, "the first events", func() bool { seq, _ := e.st.Last(); return seq >= 200 })
	testenv.FillDisk(t, filepath.Join(base, "filler"))
	atFull, _ := e.st.Last()
	waitFor(t, "the trail to let events go", func() bool {
		emit(64)
		time.Sleep(time.Millisecond)
		return metricValue(t, e.reg, "vigil_audit_lost_events_total") > 2*queue
	})
	e.stop() // fails the test if Run returns an error
	if _, err := os.Stat(reserve); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the reserve file is still there: %v", err)
	}

	evs := e.events()
	var statements, lost uint64
	for _, ev := range evs {
		switch ev.Type {
		case event.TypeStatement:
			statements++
		case event.TypeGap:
			lost += ev.Lost
		}
	}
	if statements+lost != uint64(emitted) {
		t.Errorf("%d statements stored and %d recorded lost, %d emitted", statements, lost, emitted)
	}
	n := len(evs)
	g := evs[n-2]
	if g.Type != event.TypeGap || evs[n-1].Type != event.TypeAnchor || !strings.Contains(g.Detail, "stopped while the store's disk was full") {
		t.Fatalf("the trail ends with %s %q, %s", g.Type, g.Detail, evs[n-1].Type)
	}
	if want := fmt.Sprintf("events seq %d..%d lost", atFull+1, g.Seq-1); !strings.Contains(g.Detail, want) {
		t.Errorf("gap detail %q, want %q", g.Detail, want)
	}
	rep := e.verify()
	requireOK(t, rep)
	for _, p := range rep.Problems {
		if p.Kind != KindGap {
			t.Errorf("unexpected finding: %v", p)
		}
	}
	if a := rep.Chains[0]; a.Lost != lost || a.SignedTo != a.LastSeq {
		t.Errorf("verify: %+v, want %d lost and signed to the end", a, lost)
	}

	// Space is back: a restart continues the chain and makes a new reserve.
	if err := os.Remove(filepath.Join(base, "filler")); err != nil {
		t.Fatal(err)
	}
	e.open(cfg)
	e.start()
	emit(10)
	e.stop()
	if _, err := os.Stat(reserve); err != nil {
		t.Errorf("no reserve after the restart: %v", err)
	}
	if evs := e.events(); evs[n].Seq != evs[n-1].Seq+1 || evs[n].PrevHash != evs[n-1].Hash {
		t.Errorf("the restart does not continue the chain: %+v after %+v", evs[n], evs[n-1])
	}
	requireOK(t, e.verify())
}
