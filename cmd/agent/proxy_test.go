package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testpg"
)

// TestProxyTerminatedAuth: with upstream_user set, clients authenticate to the proxy with
// the client password, and the proxy logs in upstream with SCRAM as the configured user;
// neither password reaches the trail.
func TestProxyTerminatedAuth(t *testing.T) {
	srv := testpg.Start(t)
	dir := t.TempDir()
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	const clientPW = "client-Pa55-xyz"
	t.Setenv("VIGIL_TEST_UPSTREAM_PW", srv.Password)
	t.Setenv("VIGIL_TEST_CLIENT_PW", clientPW)
	cfgPath := filepath.Join(dir, "vigil.yaml")
	cfg := fmt.Sprintf(`proxies:
  - listen: 127.0.0.1:%d
    upstream: %s
    upstream_user: vigil_scram
    upstream_password_env: VIGIL_TEST_UPSTREAM_PW
    client_password_env: VIGIL_TEST_CLIENT_PW
`, proxyPort, srv.Addr())
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	storeURL := "local:" + filepath.Join(dir, "events")
	agent := startRun(t, "--no-capture", "--config", cfgPath, "--store", storeURL,
		"--state-dir", filepath.Join(dir, "state"), "--metrics", "127.0.0.1:0", "--log-level", "warn")
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", proxyPort), agent.done)

	psql := func(password, sql string) (string, error) {
		cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", strconv.Itoa(proxyPort), "-U", "alice", "-d", "postgres", "-c", sql)
		cmd.Env = append(os.Environ(), "PGSSLMODE=disable", "PGPASSWORD="+password)
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := psql(clientPW, "SELECT current_user /* terminated */"); err != nil || out != "vigil_scram" {
		t.Errorf("through the proxy with the client password: %v %q, want the upstream login vigil_scram", err, out)
	}
	if out, err := psql("wrong", "SELECT 1"); err == nil || !strings.Contains(out, "password authentication failed") {
		t.Errorf("wrong client password: %v %q, want a refusal", err, out)
	}
	if out, err := psql(srv.Password, "SELECT 1"); err == nil || !strings.Contains(out, "password authentication failed") {
		t.Errorf("the upstream password as client password: %v %q, want a refusal", err, out)
	}
	time.Sleep(300 * time.Millisecond)
	agent.wait(t)
	out, err := vigil(t, context.Background(), "events", "--store", storeURL, "--json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "/* terminated */") || !strings.Contains(out, `"db_user":"vigil_scram"`) {
		t.Errorf("no event for the proxied statement as vigil_scram:\n%s", out)
	}
	for _, secret := range []string{srv.Password, clientPW} {
		if strings.Contains(out, secret) {
			t.Errorf("a password is in the trail:\n%s", out)
		}
	}
}

// TestProxyPassThroughAuth: without upstream_user the proxy relays the server's own
// authentication — SCRAM and md5 — and a wrong password fails as it would directly.
func TestProxyPassThroughAuth(t *testing.T) {
	srv := testpg.Start(t)
	dir := t.TempDir()
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	storeURL := "local:" + filepath.Join(dir, "events")
	agent := startRun(t, "--no-capture", "--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()),
		"--store", storeURL, "--state-dir", filepath.Join(dir, "state"), "--metrics", "127.0.0.1:0", "--log-level", "warn")
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", proxyPort), agent.done)
	for _, tc := range []struct{ user, password, want string }{
		{"vigil_scram", srv.Password, "vigil_scram"},
		{"vigil_md5", srv.Password, "vigil_md5"},
		{"vigil_scram", "wrong", "password authentication failed"},
		{"vigil_md5", "wrong", "password authentication failed"},
	} {
		for _, ssl := range []string{"disable", "require"} {
			cmd := exec.Command("psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", strconv.Itoa(proxyPort), "-U", tc.user, "-d", "postgres", "-c", "SELECT current_user")
			cmd.Env = append(os.Environ(), "PGSSLMODE="+ssl, "PGPASSWORD="+tc.password)
			out, _ := cmd.CombinedOutput()
			if ssl == "require" {
				// The proxy has no certificate here: TLS is refused, and psql says so.
				if !strings.Contains(string(out), "SSL") {
					t.Errorf("%s with sslmode=require and no proxy certificate: %q", tc.user, out)
				}
				continue
			}
			if !strings.Contains(string(out), tc.want) {
				t.Errorf("%s with password %q: %q, want %q", tc.user, tc.password, out, tc.want)
			}
		}
	}
	agent.wait(t)
	out, err := vigil(t, context.Background(), "events", "--store", storeURL, "--json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, srv.Password) {
		t.Errorf("a password is in the trail:\n%s", out)
	}
}

// waitListening waits until addr accepts connections.
func waitListening(t *testing.T, addr string, done chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("vigil run exited: %v", err)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s within 30s", addr)
}
