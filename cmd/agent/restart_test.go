package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/event"
)

// agentProc is `vigil run` in a process of its own.
type agentProc struct {
	cmd    *exec.Cmd
	done   chan error    // receives the exit status, for waitReady
	exited chan struct{} // closed at exit, then err is the exit status
	err    error
}

func startAgentProc(t *testing.T, logPath string, args ...string) *agentProc {
	t.Helper()
	unpinAfter(t, args)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(os.Args[0], append([]string{"run"}, args...)...)
	cmd.Env = append(os.Environ(), asVigilEnv+"=1")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, done: make(chan error, 1), exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
		p.done <- p.err
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// signal sends sig and waits for the agent to exit.
func (p *agentProc) signal(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	<-p.exited
	return p.err
}

// sent is one statement the load ran: its marker, and when it was sent and answered.
type sent struct {
	marker     string
	start, end time.Time
}

// load runs `SELECT 'marker'` statements with unique markers on clients connections until
// ctx ends, and returns those that the server answered.
func load(ctx context.Context, t *testing.T, dsn string, clients int) func() []sent {
	var (
		mu   sync.Mutex
		all  []sent
		wg   sync.WaitGroup
		errs = make(chan error, clients)
	)
	for c := range clients {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close(context.Background())
			var mine []sent
			for n := 0; ctx.Err() == nil; n++ {
				s := sent{marker: fmt.Sprintf("restart-%d-%07d", c, n), start: time.Now()}
				// A statement cut off by ctx is not counted: whether the server ran it
				// is unknown.
				if _, err := conn.Exec(context.Background(), "SELECT '"+s.marker+"'", pgx.QueryExecModeSimpleProtocol); err != nil {
					errs <- err
					break
				}
				s.end = time.Now()
				mine = append(mine, s)
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	return func() []sent {
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("load: %v", err)
		}
		return all
	}
}

var rfc3339 = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)

// gapWindow is the time range a restart's gap event names: from its first timestamp to its
// second, or to the event itself.
func gapWindow(e *event.Event) (from, to time.Time, ok bool) {
	ts := rfc3339.FindAllString(e.Detail, 2)
	if len(ts) == 0 {
		return time.Time{}, time.Time{}, false
	}
	from, err := time.Parse(time.RFC3339Nano, ts[0])
	if err != nil {
		return time.Time{}, time.Time{}, false
	}
	to = e.Time
	if len(ts) == 2 {
		if to, err = time.Parse(time.RFC3339Nano, ts[1]); err != nil {
			return time.Time{}, time.Time{}, false
		}
	}
	return from, to, true
}

// TestRestartKill9 kills the agent with SIGKILL under load and starts the next one at once
// on the same state directory. Every statement the clients ran is in the trail or inside
// the time range of a gap event, and `vigil verify` reports those gaps as recorded loss.
// With capture kept across restarts (the default) the kernel went on capturing while no
// agent ran, and most statements of that window are in the trail; without, the whole
// window is a gap.
func TestRestartKill9(t *testing.T) {
	testenv.RequireBPF(t)
	srv := testpg.Start(t)
	for _, tc := range []struct {
		name string
		keep bool
	}{{"kept", true}, {"not kept", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			state := filepath.Join(dir, "state")
			cfgPath := filepath.Join(dir, "vigil.yaml")
			if err := os.WriteFile(cfgPath, fmt.Appendf(nil, "capture:\n  keep_across_restarts: %v\n", tc.keep), 0o600); err != nil {
				t.Fatal(err)
			}
			addrFile := filepath.Join(dir, "metrics-addr")
			logPath := filepath.Join(dir, "agent.log")
			args := []string{"--config", cfgPath, "--state-dir", state, "--metrics", "127.0.0.1:0", "--metrics-file", addrFile, "--log-level", "warn"}
			pins, err := pinDirFor(state)
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if t.Failed() {
					b, _ := os.ReadFile(logPath)
					t.Logf("agent log:\n%s", b)
				}
			}()

			first := startAgentProc(t, logPath, args...)
			waitReady(t, addrFile, srv.Port, first.done)
			if _, err := os.Stat(pins); (err == nil) != tc.keep {
				t.Fatalf("pin directory %s: %v, want it to exist: %v", pins, err, tc.keep)
			}
			ctx, stopLoad := context.WithCancel(context.Background())
			defer stopLoad()
			wait := load(ctx, t, srv.DSN("postgres", "postgres"), 2)
			time.Sleep(500 * time.Millisecond)

			first.signal(t, syscall.SIGKILL)
			killed := time.Now()
			os.Remove(addrFile)
			second := startAgentProc(t, logPath, args...)
			waitReady(t, addrFile, srv.Port, second.done)
			ready := time.Now()
			time.Sleep(500 * time.Millisecond)
			stopLoad()
			ran := wait()
			time.Sleep(300 * time.Millisecond)
			if err := second.signal(t, syscall.SIGTERM); err != nil {
				t.Fatalf("the second agent's clean stop: %v", err)
			}

			evs := readEvents(t, state)
			stored := map[string]bool{}
			twice := 0
			type window struct{ from, to time.Time }
			var gaps []window
			for _, e := range evs {
				switch e.Type {
				case event.TypeStatement:
					if i := strings.Index(e.Statement, "'restart-"); i >= 0 {
						m := strings.Trim(e.Statement[i:], "'")
						if stored[m] {
							twice++
						}
						stored[m] = true
					}
				case event.TypeGap:
					from, to, ok := gapWindow(e)
					if !ok {
						t.Errorf("gap event without a time range: %s", e.Detail)
						continue
					}
					t.Logf("gap %s .. %s: %s", from.Format(time.StampMilli), to.Format(time.StampMilli), e.Detail)
					gaps = append(gaps, window{from, to})
				}
			}
			if len(gaps) == 0 {
				t.Fatal("no gap event for the restart")
			}
			var unaccounted []string
			down, downStored := 0, 0
			for _, s := range ran {
				in := stored[s.marker]
				if !s.end.Before(killed) && !s.start.After(ready) {
					down++
					if in {
						downStored++
					}
				}
				if in {
					continue
				}
				inGap := false
				for _, g := range gaps {
					inGap = inGap || (!s.end.Before(g.from) && !s.start.After(g.to))
				}
				if !inGap {
					unaccounted = append(unaccounted, fmt.Sprintf("%s (%s..%s)", s.marker, s.start.Format(time.StampMicro), s.end.Format(time.StampMicro)))
				}
			}
			t.Logf("%d statements ran, %d stored; killed at %s, next agent ready %v later: %d statements ran meanwhile, %d of them stored",
				len(ran), len(stored), killed.Format(time.StampMilli), ready.Sub(killed).Round(time.Millisecond), down, downStored)
			if len(unaccounted) > 0 {
				t.Errorf("%d statements neither in the trail nor in a gap's time range, e.g. %s", len(unaccounted), unaccounted[:min(5, len(unaccounted))])
			}
			if twice > 0 {
				t.Errorf("%d statements recorded twice", twice)
			}
			if down == 0 {
				t.Fatal("no statement ran while no agent did")
			}
			if tc.keep && downStored*10 < down*9 {
				t.Errorf("capture kept across the restart: %d of the %d statements run while no agent did are stored, want at least 90%%", downStored, down)
			}

			out, err := vigil(t, context.Background(), "verify", "--state-dir", state)
			if err != nil || !strings.Contains(out, "trail incomplete") {
				t.Errorf("verify: %v\n%s", err, out)
			}
			if !tc.keep && !strings.Contains(out, "loss of unknown size: agent was not capturing from") {
				t.Errorf("verify does not report the restart window as a loss of unknown size:\n%s", out)
			}
			if _, err := os.Stat(pins); (err == nil) != tc.keep {
				t.Fatalf("pin directory after a clean stop: %v, want it to exist: %v", err, tc.keep)
			}
			if !tc.keep {
				return
			}

			// Turning capture.keep_across_restarts off removes what the last agent left
			// pinned, unread, and says so.
			off := filepath.Join(dir, "off.yaml")
			if err := os.WriteFile(off, []byte("capture:\n  keep_across_restarts: false\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			os.Remove(addrFile)
			third := startRun(t, append(args, "--config", off)...)
			waitReady(t, addrFile, srv.Port, third.done)
			third.wait(t)
			if _, err := os.Stat(pins); !os.IsNotExist(err) {
				t.Errorf("pin directory after an agent without keep_across_restarts: %v, want it removed", err)
			}
			found := false
			for _, e := range readEvents(t, state) {
				found = found || (e.Type == event.TypeGap && strings.Contains(e.Detail, "removed unread: this agent does not keep capture across restarts"))
			}
			if !found {
				t.Error("no gap event says that the pinned capture was removed unread")
			}
		})
	}
}
