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
	"github.com/vigil-db/vigil/internal/testsink"
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
// off again after a quiet period — and short sessions are captured whole, or, when one
// ends before capture attaches, reported.
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
		e := col.Wait(t, 1, "early Unix session", testsink.StatementContains("early-unix-m1"))[0]
		if e.DBUser != "postgres" || e.Database != "postgres" || !strings.Contains(e.Detail, "joined this Unix-socket session after it started") {
			t.Errorf("early Unix event: %s", testsink.Dump([]*event.Event{e}))
		}
		if n := value(t, c.m.lateSessions); n != 1 {
			t.Errorf("late sessions metric = %v, want 1", n)
		}
		early.Close(ctx)
		waitUnixOff(t, c, 10*time.Second)
	})

	t.Run("short psql sessions are captured, or reported missed", func(t *testing.T) {
		// Each run starts with the tracepoints detached, so each one races the new
		// backend's first read against attaching them. Under load the session can win: then
		// one gap event must name its client, and never one for a session captured.
		const runs = 20
		type run struct {
			marker string
			pid    int
		}
		var rs []run
		for i := range runs {
			waitUnixOff(t, c, 10*time.Second)
			m := fmt.Sprintf("od-unix-%d-%d", time.Now().UnixNano(), i)
			cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-h", srv.SocketDir, "-p", strconv.Itoa(srv.Port), "-U", "postgres", "-d", "postgres", "-c", "SELECT '"+m+"'")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("psql: %v\n%s", err, out)
			}
			rs = append(rs, run{m, cmd.Process.Pid})
		}
		missed := func(e *event.Event, pid int) bool {
			return e.Type == event.TypeGap && e.Process != nil && int(e.Process.PID) == pid &&
				strings.Contains(e.Detail, fmt.Sprintf("(pid %d, ", pid)) && strings.Contains(e.Detail, "statements were not recorded")
		}
		// settled says, per run, its statement events and the gap events naming its psql.
		settled := func() (stmts, gaps [runs][]*event.Event, all bool) {
			all = true
			evs := col.Events()
			for i, r := range rs {
				for _, e := range evs {
					if testsink.StatementContains(r.marker)(e) {
						stmts[i] = append(stmts[i], e)
					}
					if missed(e, r.pid) {
						gaps[i] = append(gaps[i], e)
					}
				}
				all = all && len(stmts[i])+len(gaps[i]) > 0
			}
			return
		}
		// A missed session is reported unixMissAfter after its connect; a little longer
		// shows that no second report, or a late capture, follows.
		deadline := time.Now().Add(unixMissAfter + 5*time.Second)
		for _, _, all := settled(); !all && time.Now().Before(deadline); _, _, all = settled() {
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(time.Second)
		stmts, gaps, _ := settled()
		var whole, late, reported int
		for i, r := range rs {
			switch {
			case len(stmts[i]) > 0 && len(gaps[i]) > 0:
				t.Errorf("psql %d (%s) both captured and reported missed:\n%s", r.pid, r.marker, testsink.Dump(append(stmts[i], gaps[i]...)))
			case len(stmts[i]) == 1:
				e := stmts[i][0]
				if e.Statement != "SELECT '"+r.marker+"'" || e.Process == nil || e.Process.Comm != "psql" || int(e.Process.PID) != r.pid || e.Rows != 1 {
					t.Errorf("psql %d: statement event:\n%s", r.pid, testsink.Dump(stmts[i]))
				}
				switch {
				case strings.Contains(e.Detail, "joined this Unix-socket session after it started"):
					// User and database come from the backend's title, gone if it has exited.
					late++
				case e.DBUser != "postgres":
					t.Errorf("psql %d: session seen from its start without its user:\n%s", r.pid, testsink.Dump(stmts[i]))
				default:
					whole++
				}
			case len(stmts[i]) > 1:
				t.Errorf("psql %d: statement recorded %d times:\n%s", r.pid, len(stmts[i]), testsink.Dump(stmts[i]))
			case len(gaps[i]) != 1:
				t.Errorf("psql %d (%s): %d gap events, want exactly one for a session not captured:\n%s", r.pid, r.marker, len(gaps[i]), testsink.Dump(gaps[i]))
			default:
				reported++
				e := gaps[i][0]
				if e.Lost != 1 || e.Source != event.SourceEBPF || e.Process.Comm != "psql" || !strings.Contains(e.Detail, srv.SocketDir) {
					t.Errorf("psql %d: gap event:\n%s", r.pid, testsink.Dump(gaps[i]))
				}
			}
		}
		t.Logf("on-demand Unix capture: of %d short psql sessions, %d captured whole, %d joined late (marked in detail), %d missed and reported by a gap event", runs, whole, late, reported)
		// How many are caught whole depends on load (15-19 of 20 at normal load, as low as 10
		// with the cores saturated): the invariant above — every session accounted for — is
		// what must hold; this floor only says the on-demand attach works at all.
		if whole < 5 {
			t.Errorf("captured %d of %d sessions whole, want at least 5", whole, runs)
		}
		if n := value(t, c.m.unixMissed); n < float64(reported) {
			t.Errorf("missed Unix sessions metric = %v, want at least %d", n, reported)
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
		col.Wait(t, 1, "tcp statement", testsink.StatementContains("od-tcp-m2"))
		if _, n := unixHooks(c); n != 0 {
			t.Errorf("a TCP session attached %d Unix tracepoints", n)
		}
	})
}
