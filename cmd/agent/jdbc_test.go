package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-db/vigil/internal/testpg"
)

// jdbcJar is Debian's PostgreSQL JDBC driver (libpostgresql-jdbc-java; scripts/deps.sh
// installs it with a JDK).
const jdbcJar = "/usr/share/java/postgresql.jar"

// TestProxyJDBC drives the proxy with PostgreSQL's JDBC driver — the client of DBeaver and
// most Java applications: named server-side statements with binary results, a pipelined
// batch, a refusal with the session still usable, a refusal inside a transaction, masking
// in text and binary results, and the catalog queries a database tool starts with.
func TestProxyJDBC(t *testing.T) {
	if _, err := exec.LookPath("java"); err != nil {
		t.Fatal("java not found: scripts/deps.sh installs default-jdk-headless")
	}
	if _, err := os.Stat(jdbcJar); err != nil {
		t.Fatalf("%v: scripts/deps.sh installs libpostgresql-jdbc-java", err)
	}
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", `CREATE TABLE customers (id int PRIMARY KEY, name text, email text);
		INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com'), (2, 'Grace', 'grace@example.com');
		CREATE TABLE events_log (id int, note text)`); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	proxyPort, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	agent := startRun(t, "--no-capture", "--proxy", fmt.Sprintf("127.0.0.1:%d=%s", proxyPort, srv.Addr()),
		"--store", "local:"+filepath.Join(dir, "events"), "--state-dir", filepath.Join(dir, "state"),
		"--metrics", "127.0.0.1:0", "--log-level", "warn")
	waitListening(t, fmt.Sprintf("127.0.0.1:%d", proxyPort), agent.done)

	url := fmt.Sprintf("jdbc:postgresql://127.0.0.1:%d/postgres?user=postgres&sslmode=disable", proxyPort)
	cmd := exec.Command("java", "-cp", jdbcJar, filepath.Join("testdata", "ProxyClient.java"), url)
	out, err := cmd.CombinedOutput()
	agent.wait(t)
	if err != nil {
		t.Fatalf("java client: %v\n%s", err, out)
	}
	t.Logf("java client:\n%s", out)
	got := map[string][]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			got[k] = append(got[k], v)
		}
	}
	one := func(k string) string {
		if len(got[k]) == 0 {
			return "(none)"
		}
		return got[k][0]
	}
	for k, want := range map[string]string{
		"prepared": "10", "batch": "100", "drop_sqlstate": "42501", "after_refusal": "2",
		"tx_delete_sqlstate": "42501", "tx_after_sqlstate": "25P02", "rolled_back_name": "Ada",
		"metadata_tables": "2", "metadata_columns": "3",
	} {
		if one(k) != want {
			t.Errorf("%s = %s, want %s\n%s", k, one(k), want, out)
		}
	}
	if !strings.Contains(one("drop_message"), "drop") {
		t.Errorf("the refusal does not name its rule: %s", one("drop_message"))
	}
	if len(got["email"]) != 7 {
		t.Errorf("%d email rows, want 7\n%s", len(got["email"]), out)
	}
	for _, e := range got["email"] {
		if strings.Contains(e, "ada@example.com") {
			t.Errorf("raw PII through the proxy to JDBC: %q", e)
		}
	}
}
