package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/dashboards"
	"github.com/vigil-db/vigil/internal/testch"
	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/internal/testpg"
)

// TestAgentWithClickHouse: `vigil run --store clickhouse://…` ships the trail through the
// spool into ClickHouse, where `vigil events`, `vigil verify` and `vigil forensics` read it.
func TestAgentWithClickHouse(t *testing.T) {
	testenv.RequireBPF(t)
	ch := testch.Start(t)
	// Operators create the database (with their own grants); the agent migrates its tables.
	if _, err := ch.Query("CREATE DATABASE vigil"); err != nil {
		t.Fatal(err)
	}
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", "CREATE TABLE orders (id int PRIMARY KEY, total int)"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	storeURL := ch.DSN("vigil")
	addrFile := filepath.Join(dir, "metrics-addr")
	agent := startRun(t, "--store", storeURL, "--state-dir", state,
		"--metrics", "127.0.0.1:0", "--metrics-file", addrFile, "--log-level", "warn")
	waitReady(t, addrFile, srv.Port, agent.done)
	checkDashboardMetrics(t, addrFile)
	for i := 0; i < 20; i++ {
		cmd := exec.Command("psql", "-X", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(srv.Port), "-U", "postgres", "-d", "postgres",
			"-c", fmt.Sprintf("INSERT INTO orders VALUES (%d, %d) /* ch-e2e */", i, i*10))
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("psql: %v: %s", err, out)
		}
	}
	// The exporter ships about once a second; wait until ClickHouse has all 20.
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := vigil(t, context.Background(), "events", "--store", storeURL, "--table", "orders", "--json")
		if err == nil && strings.Count(out, "/* ch-e2e */") == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ClickHouse holds %d of 20 statements after 30s (err %v)", strings.Count(out, "/* ch-e2e */"), err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	agent.wait(t)
	if out, err := vigil(t, context.Background(), "verify", "--store", storeURL, "--state-dir", state); err != nil || !strings.Contains(out, "trail intact") {
		t.Fatalf("verify on ClickHouse: %v\n%s", err, out)
	}
	// From another machine: only the public key; the signed head comes from the store, so
	// the tail is checked and --strict passes.
	if out, err := vigil(t, context.Background(), "verify", "--store", storeURL, "--pubkey", filepath.Join(state, "agent.pub"), "--strict"); err != nil ||
		!strings.Contains(out, "tail checked") || !strings.Contains(out, "trail intact: 1 chain") {
		t.Fatalf("verify on ClickHouse with only the public key: %v\n%s", err, out)
	}
	out, err := vigil(t, context.Background(), "forensics", "table-access", "--store", storeURL, "--param", "table=orders", "--json")
	if err != nil {
		t.Fatal(err)
	}
	// One row per actor (db user, process, ...): a psql whose exe was gone before the agent
	// read /proc is its own row. Together they account for every INSERT.
	total := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var row struct {
			Comm       string `json:"process_comm"`
			Statements int    `json:"statements"`
		}
		if err := json.Unmarshal([]byte(line), &row); err != nil || row.Comm != "psql" {
			t.Fatalf("forensics table-access row %q: %v", line, err)
		}
		total += row.Statements
	}
	if total != 20 {
		t.Errorf("forensics table-access counts %d statements, want 20:\n%s", total, out)
	}
}

// checkDashboardMetrics: every metric the "Agent health" dashboard charts is one the agent
// exports, so no panel stays empty for want of a renamed metric.
func checkDashboardMetrics(t *testing.T, addrFile string) {
	t.Helper()
	qs, err := dashboards.Queries()
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := os.ReadFile(addrFile)
	resp, err := http.Get("http://" + string(addr) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	exported := map[string]bool{}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "# TYPE ") {
			f := strings.Fields(line)
			exported[f[2]] = true
			if f[3] == "histogram" {
				exported[f[2]+"_bucket"], exported[f[2]+"_sum"], exported[f[2]+"_count"] = true, true, true
			}
		}
	}
	name := regexp.MustCompile(`vigil_[a-z_]+`)
	for _, q := range qs {
		if q.Datasource != "prometheus" {
			continue
		}
		for _, m := range name.FindAllString(q.Query, -1) {
			if !exported[m] {
				t.Errorf("dashboard panel %q charts %s, which the agent does not export", q.Panel, m)
			}
		}
	}
}

// TestCleanStopShipsTail: a clean stop ships the trail's last events to ClickHouse before
// the agent exits, so `vigil verify` against ClickHouse with the agent's state directory
// finds the tail the signed head names. Statements go through the proxy (no eBPF needed),
// and the agent stops right after them, several times on the same state directory. In one
// round ClickHouse is killed before the stop: the agent still stops within its
// shutdown_timeout, and the next start ships what it left in the spool.
func TestCleanStopShipsTail(t *testing.T) {
	ch := testch.Start(t) // without the database: the agent creates it
	srv := testpg.Start(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	storeURL := ch.DSN("vigil")
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	const shutdownTimeout = 3 * time.Second
	cfgPath := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(cfgPath, []byte(fmt.Sprintf("export: {shutdown_timeout: %v}\n", shutdownTimeout)), 0o600); err != nil {
		t.Fatal(err)
	}
	total := 0
	for round := 1; round <= 4; round++ {
		away := round == 3
		agent := startRun(t, "--config", cfgPath, "--no-capture", "--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()),
			"--store", storeURL, "--state-dir", state, "--metrics", "127.0.0.1:0", "--log-level", "error")
		waitListening(t, fmt.Sprintf("127.0.0.1:%d", proxyPort), agent.done)
		args := []string{"-X", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(proxyPort), "-U", "postgres", "-d", "postgres"}
		for i := 0; i < 10; i++ {
			args = append(args, "-c", fmt.Sprintf("SELECT %d /* tail-%d */", i, round))
		}
		cmd := exec.Command("psql", args...)
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("psql: %v: %s", err, out)
		}
		total += 10
		if away {
			ch.Kill()
		}
		stopped := time.Now()
		agent.wait(t)
		if took := time.Since(stopped); took > shutdownTimeout+2*time.Second {
			t.Errorf("round %d: the agent took %v to stop (shutdown_timeout %v)", round, took, shutdownTimeout)
		}
		if away {
			if err := ch.Restart(); err != nil {
				t.Fatal(err)
			}
			continue // the next round's start ships this round's tail
		}
		out, err := vigil(t, context.Background(), "verify", "--store", storeURL, "--state-dir", state)
		if err != nil || !strings.Contains(out, "trail intact") {
			t.Fatalf("round %d: verify on ClickHouse right after a clean stop: %v\n%s", round, err, out)
		}
		if n := queryCount(t, ch, "SELECT count() FROM vigil.audit_events FINAL WHERE statement LIKE '%/* tail-%'"); n != total {
			t.Fatalf("round %d: ClickHouse holds %d of the %d statements", round, n, total)
		}
	}
}

func queryCount(t *testing.T, ch *testch.Server, sql string) int {
	t.Helper()
	out, err := ch.Query(sql)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(out)
	if err != nil {
		t.Fatalf("%s: %q", sql, out)
	}
	return n
}

// TestFreshClickHouse: on a server without the database, `vigil store migrate` creates it
// when the user may; a user who may not gets an error saying so, from `vigil store
// migrate` and on the agent's /readyz (503), counted as a config error.
func TestFreshClickHouse(t *testing.T) {
	ch := testch.Start(t)
	out, err := vigil(t, context.Background(), "store", "migrate", "--store", ch.DSN("fresh"))
	if err != nil || !strings.Contains(out, "applied migrations") {
		t.Fatalf("store migrate on a fresh server: %v\n%s", err, out)
	}
	if n := queryCount(t, ch, "SELECT count() FROM system.tables WHERE database = 'fresh' AND name = 'audit_events'"); n != 1 {
		t.Fatalf("fresh.audit_events: %d tables", n)
	}
	const want = `the database "other" does not exist and user "vigil_ro" may not create it`
	roURL := fmt.Sprintf("clickhouse://%s:%s@%s/other", testch.ReadOnlyUser, testch.ReadOnlyPassword, ch.Addr())
	if _, err := vigil(t, context.Background(), "store", "migrate", "--store", roURL); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("store migrate as a user who may not create the database: %v, want %q", err, want)
	}

	srv := testpg.Start(t)
	dir := t.TempDir()
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(cfgPath, []byte("export: {shutdown_timeout: 500ms}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addrFile := filepath.Join(dir, "metrics-addr")
	agent := startRun(t, "--config", cfgPath, "--no-capture", "--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()),
		"--store", roURL, "--state-dir", filepath.Join(dir, "state"), "--metrics", "127.0.0.1:0", "--metrics-file", addrFile, "--log-level", "error")
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", proxyPort), agent.done)
	deadline := time.Now().Add(20 * time.Second)
	for {
		addr, _ := os.ReadFile(addrFile)
		code, body := httpGet(t, "http://"+string(addr)+"/readyz")
		if code == http.StatusServiceUnavailable && strings.Contains(body, strings.ReplaceAll(want, `"`, `\"`)) {
			// A configuration error is retried at the back-off ceiling (30s) straight away,
			// not from 0.2s up.
			time.Sleep(1500 * time.Millisecond)
			_, metrics := httpGet(t, "http://"+string(addr)+"/metrics")
			if !regexp.MustCompile(`vigil_export_errors_total\{kind="config"\} 1\n`).MatchString(metrics) {
				t.Errorf("vigil_export_errors_total does not count one config error:\n%s", metrics)
			}
			if strings.Contains(body, testch.ReadOnlyPassword) || strings.Contains(metrics, testch.ReadOnlyPassword) {
				t.Errorf("the store password is on /readyz or /metrics")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz does not say the database is missing after 20s: %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	agent.wait(t)
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAgentWithClickHouseCluster: the CLI against two replicas of one shard: `vigil store
// migrate` creates the database and the schema ON CLUSTER, `vigil run` ships through the
// Distributed table, and `vigil verify` and `vigil forensics` read the cluster; each
// replica holds every event.
func TestAgentWithClickHouseCluster(t *testing.T) {
	c := testch.StartCluster(t, 2)
	storeURL := fmt.Sprintf("clickhouse://default@%s/vigil?cluster=%s", c.Addrs(), testch.ClusterReplicated)
	if out, err := vigil(t, context.Background(), "store", "migrate", "--store", storeURL); err != nil || !strings.Contains(out, "applied migrations") {
		t.Fatalf("store migrate on the cluster: %v\n%s", err, out)
	}
	srv := testpg.Start(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	agent := startRun(t, "--no-capture", "--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()),
		"--store", storeURL, "--state-dir", state, "--metrics", "127.0.0.1:0", "--log-level", "warn")
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", proxyPort), agent.done)
	args := []string{"-X", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(proxyPort), "-U", "postgres", "-d", "postgres"}
	for i := 0; i < 20; i++ {
		args = append(args, "-c", fmt.Sprintf("SELECT %d /* cluster */", i))
	}
	cmd := exec.Command("psql", args...)
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("psql: %v: %s", err, out)
	}
	agent.wait(t)
	if out, err := vigil(t, context.Background(), "verify", "--store", storeURL, "--state-dir", state); err != nil || !strings.Contains(out, "trail intact") {
		t.Fatalf("verify on the cluster: %v\n%s", err, out)
	}
	out, err := vigil(t, context.Background(), "forensics", "trail-summary", "--store", storeURL, "--json")
	if err != nil || !strings.Contains(out, `"missing":0`) {
		t.Fatalf("forensics trail-summary on the cluster: %v\n%s", err, out)
	}
	for _, r := range c.Replicas {
		if _, err := r.Query("SYSTEM SYNC REPLICA vigil.audit_events_local"); err != nil {
			t.Fatal(err)
		}
		if n := queryCount(t, r, "SELECT count() FROM vigil.audit_events_local FINAL WHERE statement LIKE '%/* cluster */'"); n != 20 {
			t.Errorf("replica %s holds %d of the 20 statements", r.Addr(), n)
		}
	}
}

// TestTwoStateDirsOneAgentID: two agents given the same agent id with their own state
// directories (a reinstall, a pod rescheduled onto an empty volume) write two chains, both
// from seq 1, in the same hour. ClickHouse keeps both whole, and verify checks each chain
// against its own key and head. Regression: with the key (hour, agent_id, seq) the first
// run's statements were collapsed into the second's and verify said "trail intact".
func TestTwoStateDirsOneAgentID(t *testing.T) {
	ch := testch.Start(t)
	srv := testpg.Start(t)
	dir := t.TempDir()
	storeURL := ch.DSN("vigil")
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	for run := 1; run <= 2; run++ {
		state := filepath.Join(dir, fmt.Sprintf("state-%d", run))
		states = append(states, state)
		agent := startRun(t, "--no-capture", "--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()), "--agent-id", "db-1",
			"--store", storeURL, "--state-dir", state, "--metrics", "127.0.0.1:0", "--log-level", "error")
		waitListening(t, fmt.Sprintf("127.0.0.1:%d", proxyPort), agent.done)
		args := []string{"-X", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(proxyPort), "-U", "postgres", "-d", "postgres"}
		for i := 0; i < 10; i++ {
			args = append(args, "-c", fmt.Sprintf("SELECT %d /* run-%d */", i, run))
		}
		cmd := exec.Command("psql", args...)
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("psql: %v: %s", err, out)
		}
		agent.wait(t)
	}
	if n := queryCount(t, ch, "SELECT count() FROM vigil.audit_events FINAL WHERE statement LIKE '%/* run-%'"); n != 20 {
		t.Errorf("ClickHouse shows %d of the 20 statements of the two runs", n)
	}
	if n := queryCount(t, ch, "SELECT uniqExact(chain_id) FROM vigil.audit_events FINAL WHERE type = 'chain'"); n != 2 {
		t.Errorf("%d chain events, want one per state directory", n)
	}
	out, err := vigil(t, context.Background(), "verify", "--store", storeURL, "--strict",
		"--pubkey", filepath.Join(states[0], "agent.pub"), "--pubkey", filepath.Join(states[1], "agent.pub"))
	if err != nil || !strings.Contains(out, "trail intact: 2 chains") || strings.Count(out, "tail checked") != 2 {
		t.Errorf("verify of both chains: %v\n%s", err, out)
	}
	// With one agent's key only, the other chain's anchors and head are not trusted.
	if out, err := vigil(t, context.Background(), "verify", "--store", storeURL, "--pubkey", filepath.Join(states[0], "agent.pub")); err == nil ||
		!strings.Contains(out, "not a trusted key") {
		t.Errorf("verify with one of the two keys: %v\n%s", err, out)
	}
}
