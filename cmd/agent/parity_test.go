package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/event"
)

// parityScript is one client session covering what a trail must get right: the simple and
// extended protocols, multi-statement Queries, errors at Parse, Bind and Execute (and after
// rows were sent), a pipeline that an error cuts short, a pgx batch, parameters of several
// types, application_name changed after startup, transactions (one that fails), COPY both
// ways (and failing), empty statements, SQL PREPARE and cursors, LISTEN/NOTIFY. It returns
// the session's backend pid, which picks its events out of the trail.
func parityScript(ctx context.Context, dsn string) (uint32, error) {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer c.Close(ctx)
	pid := c.PgConn().PID()
	simple := func(sql string) error {
		_, err := c.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
		return err
	}
	// Steps whose error is part of the script name the SQLSTATE they must fail with.
	ts := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	steps := []struct {
		code string
		run  func() error
	}{
		{"", func() error {
			return simple("CREATE TEMP TABLE parity (id int PRIMARY KEY, name text, price numeric, at timestamptz, ok bool)")
		}},
		{"", func() error { return simple("SET application_name = 'parity-one'") }},
		{"", func() error {
			return simple("INSERT INTO parity VALUES (1, 'a', 1.5, now(), true); INSERT INTO parity VALUES (2, 'b', 2.5, now(), false), (3, 'c', 3.5, now(), true);\nSELECT id FROM parity ORDER BY id")
		}},
		{"22012", func() error { return simple("SELECT 1; SELECT 1/0; SELECT 2") }},
		{"", func() error {
			_, err := c.Exec(ctx, "INSERT INTO parity VALUES ($1, $2, $3, $4, $5)", 4, "dé", 4.25, ts, nil)
			return err
		}},
		{"", func() error {
			var name string
			return c.QueryRow(ctx, "SELECT name FROM parity WHERE id = $1 AND name <> $2 AND ok IS NOT DISTINCT FROM $3", 1, "zz", true).Scan(&name)
		}},
		{"22012", func() error { var n int; return c.QueryRow(ctx, "SELECT 1/0").Scan(&n) }},
		// Errors after some rows were sent.
		{"22012", func() error { return simple("SELECT 10/(3-g) FROM generate_series(1, 5) g") }},
		{"22012", func() error {
			rows, err := c.Query(ctx, "SELECT 10/($1-g) FROM generate_series(1, 5) g", 3)
			if err != nil {
				return err
			}
			for rows.Next() {
			}
			return rows.Err()
		}},
		{"22012", func() error { var n int; return c.QueryRow(ctx, "SELECT 1/$1::int", 0).Scan(&n) }},
		{"22P02", func() error {
			return c.PgConn().ExecParams(ctx, "SELECT $1::int + 1", [][]byte{[]byte("abc")}, nil, nil, nil).Read().Err
		}},
		{"42P01", func() error {
			return c.PgConn().ExecParams(ctx, "SELECT * FROM missing_parity_table", nil, nil, nil, nil).Read().Err
		}},
		{"22012", func() error {
			b := &pgconn.Batch{}
			b.ExecParams("SELECT count(*) FROM parity", nil, nil, nil, nil)
			b.ExecParams("SELECT 10/$1::int", [][]byte{[]byte("0")}, nil, nil, nil)
			b.ExecParams("SELECT 3", nil, nil, nil, nil)
			_, err := c.PgConn().ExecBatch(ctx, b).ReadAll()
			return err
		}},
		{"", func() error {
			tx, err := c.Begin(ctx)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "UPDATE parity SET price = price + $1 WHERE id < $2", 1, 3); err != nil {
				return err
			}
			return tx.Commit(ctx)
		}},
		{"25P02", func() error {
			if err := simple("BEGIN"); err != nil {
				return err
			}
			if err := simple("SELECT 1/0"); err == nil {
				return errors.New("SELECT 1/0 did not fail")
			}
			err := simple("SELECT 1")
			if rbErr := simple("ROLLBACK"); rbErr != nil {
				return rbErr
			}
			return err
		}},
		{"", func() error {
			var s string
			return c.QueryRow(ctx, "SELECT set_config('application_name', $1, false)", "parity-two").Scan(&s)
		}},
		{"", func() error {
			_, err := c.PgConn().CopyFrom(ctx, strings.NewReader("5\te\t5.5\t2026-01-01 00:00:00+00\tt\n6\tf\t\\N\t\\N\t\\N\n"), "COPY parity FROM STDIN")
			return err
		}},
		{"", func() error {
			_, err := c.PgConn().CopyTo(ctx, &bytes.Buffer{}, "COPY (SELECT * FROM parity ORDER BY id) TO STDOUT")
			return err
		}},
		{"", func() error { return simple("SHOW application_name") }},
		{"", func() error { return simple("") }},
		{"", func() error { return c.PgConn().ExecParams(ctx, "", nil, nil, nil, nil).Read().Err }},
		{"", func() error { return simple("-- only a comment") }},
		{"22P02", func() error {
			_, err := c.PgConn().CopyFrom(ctx, strings.NewReader("7\tg\tnot-a-number\t\\N\t\\N\n"), "COPY parity FROM STDIN")
			return err
		}},
		{"", func() error {
			b := &pgx.Batch{}
			b.Queue("SELECT count(*) FROM parity WHERE id > $1", 1)
			b.Queue("UPDATE parity SET ok = $1 WHERE id = $2", false, 1)
			return c.SendBatch(ctx, b).Close()
		}},
		{"", func() error { return simple("PREPARE p(int) AS SELECT $1 + 1; EXECUTE p(41); DEALLOCATE p") }},
		{"", func() error {
			return simple("BEGIN; DECLARE cur CURSOR FOR SELECT id FROM parity ORDER BY id; FETCH 2 FROM cur; CLOSE cur; COMMIT")
		}},
		{"", func() error { return simple("LISTEN parity_chan; NOTIFY parity_chan, 'x'; UNLISTEN parity_chan") }},
		{"", func() error { return simple("SET application_name = 'parity-three'; SELECT 4") }},
		{"", func() error { return simple("SELECT 5") }},
	}
	for i, st := range steps {
		err := st.run()
		var pe *pgconn.PgError
		switch {
		case st.code == "" && err != nil:
			return pid, fmt.Errorf("step %d: %w", i, err)
		case st.code != "" && (!errors.As(err, &pe) || pe.Code != st.code):
			return pid, fmt.Errorf("step %d: error %v, want SQLSTATE %s", i, err, st.code)
		}
	}
	return pid, nil
}

// TestProxyCaptureParity runs one client session directly against PostgreSQL, where capture
// records it, and once more through the proxy, and compares the two trails field by field:
// the same statements in the same order, with the same kinds, tables, rows, errors,
// parameters, user, database, application and decision. The fields that legitimately
// differ are those of the connection (client and server address, backend pid, session id,
// process), the times and durations, the source, Vigil's chain fields, and an error
// message the proxy redacted (docs/proxy.md lists them).
func TestProxyCaptureParity(t *testing.T) {
	testenv.RequireBPF(t)
	pr := startParity(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := "postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable"
	directPID, err := parityScript(ctx, fmt.Sprintf(dsn, pr.srv.Port))
	if err != nil {
		t.Fatalf("direct: %v", err)
	}
	if _, err := parityScript(ctx, fmt.Sprintf(dsn, pr.proxyPort)); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	captured, proxied := pr.trails(t, directPID)
	compareTrails(t, captured, proxied)
}

// TestProxyCaptureParityJDBC is TestProxyCaptureParity with PostgreSQL's JDBC driver
// (testdata/ParityClient.java), which prepares, pipelines and sets application_name its own
// way.
func TestProxyCaptureParityJDBC(t *testing.T) {
	testenv.RequireBPF(t)
	if _, err := exec.LookPath("java"); err != nil {
		t.Fatal("java not found: scripts/deps.sh installs default-jdk-headless")
	}
	pr := startParity(t)
	run := func(port int) uint32 {
		t.Helper()
		url := fmt.Sprintf("jdbc:postgresql://127.0.0.1:%d/postgres?user=postgres&sslmode=disable", port)
		out, err := exec.Command("java", "-cp", jdbcJar, filepath.Join("testdata", "ParityClient.java"), url).CombinedOutput()
		if err != nil {
			t.Fatalf("java client on port %d: %v\n%s", port, err, out)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if pid, ok := strings.CutPrefix(line, "pid="); ok {
				n, err := strconv.ParseUint(pid, 10, 32)
				if err != nil {
					t.Fatalf("java client: %q: %v", line, err)
				}
				return uint32(n)
			}
		}
		t.Fatalf("java client printed no pid:\n%s", out)
		return 0
	}
	directPID := run(pr.srv.Port)
	run(pr.proxyPort)
	captured, proxied := pr.trails(t, directPID)
	compareTrails(t, captured, proxied)
}

// parityRun is `vigil run` with capture and a proxy in front of a server of its own.
type parityRun struct {
	srv       *testpg.Server
	proxyPort int
	dir       string
	agent     *agentRun
}

func startParity(t *testing.T) *parityRun {
	t.Helper()
	pr := &parityRun{srv: testpg.Start(t), dir: t.TempDir()}
	var err error
	if pr.proxyPort, err = testpg.FreePort(); err != nil {
		t.Fatal(err)
	}
	addrFile := filepath.Join(pr.dir, "metrics-addr")
	pr.agent = startRun(t, "--store", "local:"+filepath.Join(pr.dir, "events"), "--state-dir", filepath.Join(pr.dir, "state"),
		"--metrics", "127.0.0.1:0", "--metrics-file", addrFile, "--log-level", "warn",
		"--proxy", fmt.Sprintf("127.0.0.1:%d=%s", pr.proxyPort, pr.srv.Addr()))
	waitReady(t, addrFile, pr.srv.Port, pr.agent.done)
	return pr
}

// trails stops the agent and returns the statement events capture recorded for the direct
// session (backend directPID) and those the proxy recorded.
func (pr *parityRun) trails(t *testing.T, directPID uint32) (captured, proxied []*event.Event) {
	t.Helper()
	time.Sleep(300 * time.Millisecond) // capture's reader drains every 50 ms
	pr.agent.wait(t)
	out, err := vigil(t, context.Background(), "events", "--store", "local:"+filepath.Join(pr.dir, "events"), "--json", "--type", "statement")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		e := new(event.Event)
		if err := json.Unmarshal([]byte(line), e); err != nil {
			t.Fatalf("events --json line %q: %v", line, err)
		}
		// Other engineers' servers on this host are captured too: only this one's
		// sessions count.
		switch {
		case e.Source == event.SourceEBPF && e.BackendPID == int32(directPID) && e.ServerAddr == pr.srv.Addr():
			captured = append(captured, e)
		case e.Source == event.SourceProxy:
			// The agent's one proxy saw one session. (Its events carry the upstream
			// backend's pid, which the client never sees: it gets a key of the proxy's.)
			proxied = append(proxied, e)
		case e.Source == event.SourceEBPF && e.ServerAddr == pr.srv.Addr() && strings.Contains(e.Statement, "parity"):
			t.Errorf("capture recorded the proxy's upstream session: %q", e.Statement)
		}
	}
	if len(captured) == 0 {
		t.Fatalf("capture recorded nothing of the direct session (pid %d):\n%s", directPID, out)
	}
	return captured, proxied
}

// compareTrails fails the test where the two trails differ, event by event.
func compareTrails(t *testing.T, captured, proxied []*event.Event) {
	t.Helper()
	n := max(len(captured), len(proxied))
	for i := 0; i < n; i++ {
		var c, p *event.Event
		if i < len(captured) {
			c = captured[i]
		}
		if i < len(proxied) {
			p = proxied[i]
		}
		if c == nil || p == nil {
			t.Errorf("event %d: captured %s, proxied %s", i, brief(c), brief(p))
			continue
		}
		if d := parityDiff(c, p); d != "" {
			t.Errorf("event %d (%q): %s", i, c.Statement, d)
		}
		if p.Decision == "" {
			t.Errorf("event %d (%q): the proxy's event has no decision", i, p.Statement)
		}
	}
	t.Logf("%d events captured, %d proxied", len(captured), len(proxied))
	if t.Failed() || testing.Verbose() {
		for i, e := range captured {
			t.Logf("captured %d: %s", i, brief(e))
		}
		for i, e := range proxied {
			t.Logf("proxied %d: %s", i, brief(e))
		}
	}
}

// parityDiff names the fields in which two events of the same statement differ, but for
// those that belong to the connection, the clock or the trail.
func parityDiff(c, p *event.Event) string {
	strip := func(e *event.Event) event.Event {
		x := *e
		x.Time, x.DurationUS, x.Source = time.Time{}, 0, ""
		x.ClientAddr, x.ServerAddr, x.SessionID, x.BackendPID = "", "", "", 0
		x.Process, x.Identity = nil, nil
		x.Host, x.AgentID, x.Seq, x.Signature, x.KeyID, x.PrevHash, x.Hash = "", "", 0, "", "", "", ""
		return x
	}
	a, b := strip(c), strip(p)
	if a.Statement == "" && a.Kind == "" && a.Decision == "" {
		// Capture labels no empty statement (it also stands for text it did not see); the
		// proxy judged this one like any other.
		b.Kind, b.Decision, b.Rule = "", "", ""
	}
	if redactedFrom(b.ErrorMessage, a.ErrorMessage) {
		// Once a session's results are masked the proxy redacts the values in the error
		// messages it passes on, and records what it passed on; capture has the server's.
		b.ErrorMessage = a.ErrorMessage
	}
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var diffs []string
	for i := 0; i < va.NumField(); i++ {
		fa, fb := va.Field(i).Interface(), vb.Field(i).Interface()
		if !reflect.DeepEqual(fa, fb) && !(isEmpty(va.Field(i)) && isEmpty(vb.Field(i))) {
			diffs = append(diffs, fmt.Sprintf("%s: captured %v, proxied %v", va.Type().Field(i).Name, fa, fb))
		}
	}
	return strings.Join(diffs, "; ")
}

// redactedFrom: redacted is msg with values replaced by the proxy's "****".
func redactedFrom(redacted, msg string) bool {
	if !strings.Contains(redacted, "****") {
		return false
	}
	pat := strings.ReplaceAll(regexp.QuoteMeta(redacted), regexp.QuoteMeta("****"), ".+")
	return regexp.MustCompile("^" + pat + "$").MatchString(msg)
}

// isEmpty: nil and empty slices are the same absence once stored.
func isEmpty(v reflect.Value) bool {
	return (v.Kind() == reflect.Slice || v.Kind() == reflect.Map) && v.Len() == 0
}

func brief(e *event.Event) string {
	if e == nil {
		return "nothing"
	}
	return fmt.Sprintf("%q rows=%d err=%s params=%q app=%q kind=%s decision=%s rule=%s detail=%q",
		e.Statement, e.Rows, e.Error, e.Params, e.Application, e.Kind, e.Decision, e.Rule, e.Detail)
}
