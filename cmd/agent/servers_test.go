package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/event"
)

// TestExplicitServersOnly: with discover off, capture records the servers the configuration
// lists and no other, whichever way a client reaches them (plain TCP, TLS, Unix socket).
// Both servers run the same binary, so TLS uprobes on it fire for both.
func TestExplicitServersOnly(t *testing.T) {
	testenv.RequireBPF(t)
	listed, other := testpg.Start(t), testpg.Start(t)
	for _, tc := range []struct {
		name, entry string
		discover    bool
	}{
		{"by port", fmt.Sprintf("{ports: [%d]}", listed.Port), false},
		// The binary names the server's executable; it does not add every server running it.
		{"by port with binary", fmt.Sprintf("{ports: [%d], binary: %s}", listed.Port, filepath.Join(testpg.BinDir, "postgres")), false},
		// With discovery on, the list adds to what discovery finds.
		{"discover too", fmt.Sprintf("{ports: [%d]}", listed.Port), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Unix capture always on: this is about which servers are captured. On demand, a
			// psql -c shorter than the attach is a gap event instead (TestUnixOnDemand), which
			// made this test miss a statement about one run in ten under load.
			conf := fmt.Sprintf("capture:\n  discover: %v\n  unix_always_on: true\n  servers:\n    - %s\n", tc.discover, tc.entry)
			explicitServers(t, conf, listed, other, tc.discover)
		})
	}
}

// explicitServers runs the agent with conf and sends statements to both servers over
// plain TCP, TLS and the Unix socket: listed's must be in the trail, other's only when
// discovered.
func explicitServers(t *testing.T, conf string, listed, other *testpg.Server, discovered bool) {
	dir := t.TempDir()
	confFile := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	storeURL := "local:" + filepath.Join(dir, "events")
	addrFile := filepath.Join(dir, "metrics-addr")
	agent := startRun(t, "--config", confFile, "--store", storeURL, "--state-dir", filepath.Join(dir, "state"),
		"--metrics", "127.0.0.1:0", "--metrics-file", addrFile, "--log-level", "warn")
	waitReady(t, addrFile, listed.Port, agent.done)

	psql := func(srv *testpg.Server, host, sslmode, sql string) {
		t.Helper()
		cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", strconv.Itoa(srv.Port), "-U", "postgres", "-d", "postgres", "-c", sql)
		cmd.Env = append(os.Environ(), "PGSSLMODE="+sslmode)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("psql %s: %v: %s", sql, err, out)
		}
	}
	// The unlisted server first: by the time the listed server's statements are in the
	// trail, capture has read the records of the other's too.
	var unlisted, wanted []string
	for _, srv := range []*testpg.Server{other, listed} {
		for _, p := range []struct{ name, host, sslmode string }{
			{"tcp", "127.0.0.1", "disable"},
			{"tls", "127.0.0.1", "require"},
			{"unix", srv.SocketDir, "disable"},
		} {
			m := fmt.Sprintf("servers_%s_%d_%d", p.name, srv.Port, time.Now().UnixNano())
			psql(srv, p.host, p.sslmode, "SELECT '"+m+"'")
			if srv == listed || discovered {
				wanted = append(wanted, m)
			} else {
				unlisted = append(unlisted, m)
			}
		}
	}
	time.Sleep(time.Second)
	agent.wait(t)

	out, err := vigil(t, context.Background(), "events", "--store", storeURL, "--json")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]*event.Event{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e event.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("events --json line %q: %v", line, err)
		}
		for _, m := range append(wanted, unlisted...) {
			if strings.Contains(e.Statement, m) {
				seen[m] = &e
			}
		}
	}
	for _, m := range wanted {
		if seen[m] == nil {
			t.Errorf("the statement %s is not in the trail", m)
		}
	}
	for _, m := range unlisted {
		if e := seen[m]; e != nil {
			t.Errorf("the unlisted server's statement %s is in the trail: server_addr %s, tls %v, backend %d", m, e.ServerAddr, e.TLS, e.BackendPID)
		}
	}
}
