package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/bpffs"
	"github.com/vigil-db/vigil/pkg/config"
	"github.com/vigil-db/vigil/pkg/event"
)

// vigil runs the CLI in-process and returns its standard output.
func vigil(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCmd()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err := cmd.ExecuteContext(ctx)
	if err != nil {
		err = fmt.Errorf("vigil %s: %w\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), err
}

// agentRun is `vigil run` running in-process for a test.
type agentRun struct {
	stop context.CancelFunc
	done chan error // receives run's error once it returns
}

// startRun starts `vigil run args...` in-process. The capture it leaves pinned is removed
// when the test ends: a later test would otherwise find its programs still on lo.
func startRun(t *testing.T, args ...string) *agentRun {
	t.Helper()
	unpinAfter(t, args)
	ctx, stop := context.WithCancel(context.Background())
	r := &agentRun{stop: stop, done: make(chan error, 1)}
	go func() {
		_, err := vigil(t, ctx, append([]string{"run"}, args...)...)
		r.done <- err
	}()
	return r
}

// unpinAfter removes, when t ends, what an agent run with args pinned.
func unpinAfter(t *testing.T, args []string) {
	t.Helper()
	state := config.Default().StateDir
	for i, a := range args {
		if a == "--state-dir" && i+1 < len(args) {
			state = args[i+1]
		}
	}
	dir, err := pinDirFor(state)
	if err != nil {
		t.Fatal(err)
	}
	steerDir, _ := steerPinDirFor(state)
	t.Cleanup(func() {
		for _, d := range []string{dir, steerDir} {
			if err := bpffs.Unpin(d); err != nil {
				t.Errorf("removing the test agent's pins: %v", err)
			}
		}
	})
}

// wait stops the agent (as SIGTERM would) and fails the test unless it exits cleanly.
func (r *agentRun) wait(t *testing.T) {
	t.Helper()
	r.stop()
	if err := <-r.done; err != nil {
		t.Fatalf("vigil run: %v", err)
	}
}

// TestAgentEndToEnd runs `vigil run` with capture and a proxy in front of a real
// PostgreSQL, then reads the trail back with `vigil events` and checks it with `vigil verify`.
func TestAgentEndToEnd(t *testing.T) {
	testenv.RequireBPF(t)
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", "CREATE TABLE customers (id int PRIMARY KEY, email text); INSERT INTO customers VALUES (1, 'ada@example.com')"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	storeURL := "local:" + filepath.Join(dir, "events")
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addrFile := filepath.Join(dir, "metrics-addr")
	agent := startRun(t, "--store", storeURL, "--state-dir", filepath.Join(dir, "state"),
		"--metrics", "127.0.0.1:0", "--metrics-file", addrFile, "--log-level", "warn",
		"--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()))
	waitReady(t, addrFile, srv.Port, agent.done)

	run := func(port int, sql string) string {
		cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres", "-d", "postgres", "-c", sql)
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	run(srv.Port, "UPDATE customers SET email = 'ada@example.org' WHERE id = 1 /* direct */")
	// Credentials in statements, captured and proxied (refused there: role changes need
	// an approval), are redacted before the trail stores them.
	secrets := []string{"e2e-direct-pw", "e2e-proxy-pw"}
	run(srv.Port, "CREATE ROLE e2e_pw LOGIN PASSWORD '"+secrets[0]+"'")
	run(proxyPort, "ALTER ROLE e2e_pw PASSWORD '"+secrets[1]+"'")
	if out := run(proxyPort, "DROP TABLE customers"); !strings.Contains(out, "drop") {
		t.Errorf("DROP through the proxy: %q, want a refusal naming the rule", out)
	}
	if out := run(proxyPort, "SELECT email FROM customers WHERE id = 1 /* proxied */"); strings.Contains(out, "ada@example") {
		t.Errorf("SELECT through the proxy returned raw PII: %q", out)
	}
	time.Sleep(300 * time.Millisecond)
	agent.wait(t)

	out, err := vigil(t, context.Background(), "events", "--store", storeURL, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var evs []*event.Event
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e event.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("events --json line %q: %v", line, err)
		}
		evs = append(evs, &e)
	}
	find := func(what string, match func(*event.Event) bool) []*event.Event {
		var got []*event.Event
		for _, e := range evs {
			if match(e) {
				got = append(got, e)
			}
		}
		if len(got) == 0 {
			t.Errorf("no event for %s in:\n%s", what, out)
		}
		return got
	}
	find("the CREATE ROLE", func(e *event.Event) bool {
		return strings.HasPrefix(e.Statement, "CREATE ROLE e2e_pw") && e.Source == event.SourceEBPF
	})
	find("the proxied ALTER ROLE", func(e *event.Event) bool {
		return strings.HasPrefix(e.Statement, "ALTER ROLE e2e_pw") && e.Source == event.SourceProxy
	})
	stored, err := os.ReadDir(filepath.Join(dir, "events"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range stored {
		b, err := os.ReadFile(filepath.Join(dir, "events", f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, pw := range secrets {
			if bytes.Contains(b, []byte(pw)) {
				t.Errorf("the password %q is stored in %s", pw, f.Name())
			}
		}
	}
	for _, e := range find("the direct UPDATE", func(e *event.Event) bool { return strings.Contains(e.Statement, "/* direct */") }) {
		if e.Source != event.SourceEBPF || e.Kind != "UPDATE" || e.Rows != 1 || e.Seq == 0 || e.Hash == "" || e.Process == nil || e.Process.Comm != "psql" {
			t.Errorf("direct UPDATE event: %+v", e)
		}
	}
	// Capture sees every server on the host, other tests' too: only this one's DROP counts.
	for _, e := range find("the refused DROP", func(e *event.Event) bool {
		return strings.HasPrefix(e.Statement, "DROP TABLE customers") && (e.Source == event.SourceProxy || e.ServerAddr == srv.Addr())
	}) {
		if e.Source != event.SourceProxy || e.Decision != event.DecisionBlock || e.Rule != "drop" {
			t.Errorf("DROP event: %+v", e)
		}
	}
	sel := find("the proxied SELECT", func(e *event.Event) bool { return strings.Contains(e.Statement, "/* proxied */") })
	if len(sel) != 1 {
		t.Errorf("the proxied SELECT is recorded %d times, want once (by the proxy, not again by capture)", len(sel))
	}
	for _, e := range sel {
		if e.Source != event.SourceProxy || len(e.MaskedColumns) == 0 {
			t.Errorf("proxied SELECT event: %+v", e)
		}
	}
	for _, e := range evs {
		// Other tests' proxies on this host are not ours to ignore: only this server counts.
		if e.Source == event.SourceEBPF && e.ServerAddr == srv.Addr() && strings.Contains(e.Statement, "vigil") && strings.Contains(e.Statement, "refused") {
			t.Errorf("capture recorded the proxy's own upstream traffic: %+v", e)
		}
	}

	if out, err := vigil(t, context.Background(), "verify", "--store", storeURL, "--state-dir", filepath.Join(dir, "state")); err != nil || !strings.Contains(out, "trail intact") {
		t.Fatalf("verify of an untouched trail: %v\n%s", err, out)
	}
	if out, err := vigil(t, context.Background(), "events", "--store", storeURL, "--kind", "UPDATE"); err != nil || !strings.Contains(out, "/* direct */") || !strings.Contains(out, "psql[") {
		t.Errorf("events table: %v\n%s", err, out)
	}

	// Alter one stored event: verify must fail and say where.
	tamper(t, filepath.Join(dir, "events"), "ada@example.org", "eve@example.org")
	out, err = vigil(t, context.Background(), "verify", "--store", storeURL, "--state-dir", filepath.Join(dir, "state"))
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(out, "altered") {
		t.Fatalf("verify of an altered trail: err %v, output:\n%s", err, out)
	}
}

func waitReady(t *testing.T, addrFile string, port int, done chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("vigil run exited: %v", err)
		default:
		}
		if b, err := os.ReadFile(addrFile); err == nil {
			if resp, err := http.Get("http://" + string(b) + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 && watching(t, string(b)) {
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("vigil run not ready within 30s")
}

// watching: capture is attached to at least one server.
func watching(t *testing.T, addr string) bool {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, "vigil_capture_servers ") {
			return strings.TrimPrefix(line, "vigil_capture_servers ") != "0"
		}
	}
	return false
}

func tamper(t *testing.T, dir, from, to string) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(from)) {
			if err := os.WriteFile(f, bytes.Replace(b, []byte(from), []byte(to), 1), 0o600); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no stored event contains %q", from)
}

func TestPolicyEval(t *testing.T) {
	for _, tc := range []struct {
		sql, decision, rule, kind string
	}{
		{"SELECT * FROM orders WHERE id = 1", "allow", "default", "SELECT"},
		{"DELETE FROM orders", "block", "no-effective-where", "DELETE"},
		{"DROP TABLE orders", "block", "drop", "DDL"},
		{"SELEC 1", "block", "unparseable", "OTHER"},
	} {
		out, err := vigil(t, context.Background(), "policy", "eval", "--sql", tc.sql)
		if err != nil {
			t.Fatal(err)
		}
		var got struct{ Decision, Rule, Kind string }
		if err := json.Unmarshal([]byte(out), &got); err != nil || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Fatalf("policy eval %q: not one JSON line: %q (%v)", tc.sql, out, err)
		}
		if got.Decision != tc.decision || got.Rule != tc.rule || got.Kind != tc.kind {
			t.Errorf("policy eval %q = %+v, want %s/%s/%s", tc.sql, got, tc.decision, tc.rule, tc.kind)
		}
	}
}
