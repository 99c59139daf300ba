package capture

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/event"
)

// unixHooks reports whether the connect_unix trigger is attached and how many of the Unix
// syscall tracepoints are.
func unixHooks(c *Capturer) (trigger bool, tracepoints int) {
	for _, h := range c.Hooks() {
		switch {
		case h.Name == "cgroup/connect_unix":
			trigger = h.Attached
		case strings.HasPrefix(h.Name, "tracepoint/syscalls/") && h.Attached:
			tracepoints++
		}
	}
	return
}

// value reads a counter or gauge.
func value(t *testing.T, m prometheus.Metric) float64 {
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

func waitUnixOff(t *testing.T, c *Capturer, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if _, n := unixHooks(c); n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Unix tracepoints still attached after %v: %+v", within, c.Hooks())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestUnixOnDemand: the Unix syscall tracepoints, which tax every syscall on the host, are
// attached only while Unix-socket sessions exist — switched on by a client's connect(),
// off again after a quiet period — and short sessions are still captured whole.
func TestUnixOnDemand(t *testing.T) {
	srv := testpg.Start(t)
	ctx := context.Background()
	// A Unix-socket session opened before the agent: capture must switch on for it at
	// start, and say that it joined it late.
	early, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres sslmode=disable", srv.SocketDir, srv.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close(ctx)

	const quiet = 300 * time.Millisecond
	c, col := startCapture(t, srv, func(cfg *Config) { cfg.UnixQuiet = quiet })
	if trig, n := unixHooks(c); !trig || n != 4 {
		t.Fatalf("with a Unix-socket session open at start: trigger attached %v, %d tracepoints attached, want true, 4: %+v", trig, n, c.Hooks())
	}

	t.Run("session opened before the agent is marked as joined late", func(t *testing.T) {
		if _, err := early.Exec(ctx, "SELECT 'early-unix-m1'"); err != nil {
			t.Fatal(err)
		}
		e := col.wait(t, 1, "early Unix session", stmtContains("early-unix-m1"))[0]
		if e.DBUser != "postgres" || e.Database != "postgres" || !strings.Contains(e.Detail, "joined this Unix-socket session after it started") {
			t.Errorf("early Unix event: %s", dump([]*event.Event{e}))
		}
		if n := value(t, c.m.lateSessions); n != 1 {
			t.Errorf("late sessions metric = %v, want 1", n)
		}
		early.Close(ctx)
		waitUnixOff(t, c, 10*time.Second)
	})

	t.Run("short psql sessions switch capture on and are captured whole", func(t *testing.T) {
		const runs = 20
		var captured, late int // late: captured whole, but after the startup message
		var missed []string
		for i := range runs {
			// Each run starts with the tracepoints detached, so each one races the new
			// backend's first read against attaching them.
			waitUnixOff(t, c, 10*time.Second)
			m := fmt.Sprintf("od-unix-%d-%d", time.Now().UnixNano(), i)
			cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-h", srv.SocketDir, "-p", strconv.Itoa(srv.Port), "-U", "postgres", "-d", "postgres", "-c", "SELECT '"+m+"'")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("psql: %v\n%s", err, out)
			}
			var got *event.Event
			for deadline := time.Now().Add(3 * time.Second); got == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				for _, e := range col.snapshot() {
					if stmtContains(m)(e) {
						got = e
					}
				}
			}
			switch {
			case got == nil:
				missed = append(missed, m+": no event")
			case got.Statement != "SELECT '"+m+"'" || got.Process == nil || got.Process.Comm != "psql" || got.DBUser != "postgres" || got.Rows != 1:
				missed = append(missed, dump([]*event.Event{got}))
			default:
				captured++
				if strings.Contains(got.Detail, "joined") {
					late++
				}
			}
		}
		t.Logf("on-demand Unix capture: %d of %d short psql sessions' statements captured whole with their client; %d of them joined after the startup message (marked in detail)", captured, runs, late)
		if captured < runs-1 {
			t.Errorf("captured %d of %d; misses:\n%s", captured, runs, strings.Join(missed, "\n"))
		}
		if n := value(t, c.m.unixTriggers); n < runs {
			t.Errorf("Unix connects metric = %v, want at least %d", n, runs)
		}
	})

	t.Run("off again after the quiet period", func(t *testing.T) {
		waitUnixOff(t, c, 10*time.Second)
		if trig, _ := unixHooks(c); !trig {
			t.Errorf("connect_unix trigger detached: %+v", c.Hooks())
		}
		if v := value(t, c.m.unixOn); v != 0 {
			t.Errorf("vigil_capture_unix_on = %v with the tracepoints detached", v)
		}
		// TCP sessions do not switch Unix capture on.
		psql(t, srv, "127.0.0.1", "disable", "SELECT 'od-tcp-m2'", "")
		col.wait(t, 1, "tcp statement", stmtContains("od-tcp-m2"))
		if _, n := unixHooks(c); n != 0 {
			t.Errorf("a TCP session attached %d Unix tracepoints", n)
		}
	})
}
