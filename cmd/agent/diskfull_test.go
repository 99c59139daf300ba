package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/event"
)

// TestAgentDiskFull runs the agent with its state directory (key, head, store) on a 4 MiB
// tmpfs while statements stream through its proxy, and fills that disk. /readyz must turn
// 503 saying the disk is full and what to do, the metrics must say it, and once space is
// freed the agent must be ready again. The disk then fills again and the agent is stopped
// before space returns. `vigil verify` must report both losses as gaps the agent recorded
// — every statement either stored or counted lost — not as an intact trail and not as a
// hole.
func TestAgentDiskFull(t *testing.T) {
	disk := testenv.Tmpfs(t, 4<<20)
	srv := testpg.Start(t)
	dir := t.TempDir()
	state := filepath.Join(disk, "state")
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// A small queue, so that the outage fills it within the test.
	cfgPath := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(cfgPath, []byte("audit:\n  queue_events: 1024\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrFile := filepath.Join(dir, "metrics-addr")
	agent := startRun(t, "--no-capture", "--config", cfgPath, "--state-dir", state,
		"--metrics", "127.0.0.1:0", "--metrics-file", addrFile, "--log-level", "warn",
		"--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()))
	stopped := false
	t.Cleanup(func() { // the store's files must close before the tmpfs is unmounted
		if !stopped {
			agent.stop()
			<-agent.done
		}
	})
	waitReadyz(t, addrFile, agent.done)
	addr, _ := os.ReadFile(addrFile)
	base := "http://" + string(addr)

	// One session through the proxy, as fast as it answers; stopping lets the statement
	// in flight finish, so that every one counted executed has its event.
	var executed atomic.Int64
	var stopLoad atomic.Bool
	defer stopLoad.Store(true)
	loadDone := make(chan error, 1)
	go func() {
		ctx := context.Background()
		c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", proxyPort))
		if err != nil {
			loadDone <- err
			return
		}
		defer c.Close(ctx)
		for i := 0; !stopLoad.Load(); i++ {
			if _, err := c.Exec(ctx, "SELECT "+strconv.Itoa(i)+" /* diskfull */", pgx.QueryExecModeSimpleProtocol); err != nil {
				loadDone <- err
				return
			}
			executed.Add(1)
		}
		loadDone <- nil
	}()
	metric := func(name string) float64 {
		_, body := httpGet(t, base+"/metrics")
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
		}
		return -1
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			select {
			case err := <-loadDone:
				t.Fatalf("the statement loop stopped: %v", err)
			case err := <-agent.done:
				t.Fatalf("vigil run exited: %v", err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitUntil("statements stored", func() bool { return executed.Load() > 200 })

	filler := filepath.Join(disk, "filler")
	testenv.FillDisk(t, filler)
	var readyz string
	full := func() {
		t.Helper()
		lost := metric("vigil_audit_lost_events_total")
		waitUntil("/readyz to say the disk is full", func() bool {
			code, body := httpGet(t, base+"/readyz")
			readyz = body
			return code == 503 && strings.Contains(body, "disk full") && metric("vigil_audit_lost_events_total") > lost
		})
	}
	full()
	if !strings.Contains(readyz, "free space") || !strings.Contains(readyz, `"trail"`) {
		t.Errorf("/readyz does not say what to do:\n%s", readyz)
	}
	if v := metric("vigil_store_disk_full"); v != 1 {
		t.Errorf("vigil_store_disk_full = %v while the disk is full", v)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitUntil("/readyz to be 200 again", func() bool {
		code, _ := httpGet(t, base+"/readyz")
		return code == 200
	})
	if v := metric("vigil_store_disk_full"); v != 0 {
		t.Errorf("vigil_store_disk_full = %v once space is back", v)
	}
	time.Sleep(100 * time.Millisecond)
	testenv.FillDisk(t, filler)
	full()
	stopLoad.Store(true)
	if err := <-loadDone; err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the proxy emits the last statement's event
	agent.wait(t)
	stopped = true

	out, err := vigil(t, context.Background(), "verify", "--state-dir", state)
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, out)
	}
	if strings.Contains(out, "trail intact") || !strings.Contains(out, "lost: the store's disk was full") ||
		!strings.Contains(out, "lost: the agent stopped while the store's disk was full") || strings.Contains(out, "missing") {
		t.Errorf("verify does not report the loss as recorded:\n%s", out)
	}
	evs := readEvents(t, state)
	var statements, lost uint64
	for _, e := range evs {
		switch e.Type {
		case event.TypeStatement:
			statements++
		case event.TypeGap:
			lost += e.Lost
		}
	}
	if n := uint64(executed.Load()); statements+lost != n {
		t.Errorf("%d statements stored and %d recorded lost for %d executed", statements, lost, n)
	}
	t.Logf("%d statements executed, %d stored, %d lost\n%s", executed.Load(), statements, lost, out)
}

// readEvents reads the trail the agent with state directory state stored.
func readEvents(t *testing.T, state string) []*event.Event {
	t.Helper()
	out, err := vigil(t, context.Background(), "events", "--state-dir", state, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var evs []*event.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		e := new(event.Event)
		if err := json.Unmarshal([]byte(line), e); err != nil {
			t.Fatalf("events --json line %q: %v", line, err)
		}
		evs = append(evs, e)
	}
	return evs
}
