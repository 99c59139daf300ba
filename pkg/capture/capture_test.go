package capture

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/internal/testenv"
	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/internal/testsink"
	"github.com/vigil-db/vigil/pkg/capture/postgres"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/policy"
	"github.com/vigil-db/vigil/pkg/sqlparse"
)

// startCapture runs capture on the host and waits until it watches srv. opts adjust the
// configuration.
func startCapture(t *testing.T, srv *testpg.Server, opts ...func(*Config)) (*Capturer, *testsink.Collector) {
	t.Helper()
	engine, err := policy.NewEngine(policy.Default())
	if err != nil {
		t.Fatal(err)
	}
	return startCaptureWith(t, srv, engine, opts...)
}

// startCaptureWith is startCapture with the labeler given.
func startCaptureWith(t *testing.T, srv *testpg.Server, engine Labeler, opts ...func(*Config)) (*Capturer, *testsink.Collector) {
	t.Helper()
	testenv.RequireBPF(t)
	col := &testsink.Collector{}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	cfg := Config{
		Host: "test", TLS: true, Unix: true, Discover: true, Interval: 200 * time.Millisecond,
		Decoder: postgres.Config{RecordParams: true},
	}
	for _, o := range opts {
		o(&cfg)
	}
	c, err := New(cfg, col, engine, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("capture.Run: %v", err)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for !(c.Ready() && c.isServer(netipPort(srv.Port))) {
		select {
		case err := <-done:
			t.Fatalf("capture stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("capture did not attach to the server within 20s; hooks: %+v", c.Hooks())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c, col
}

// psql runs sql with psql (SQL errors are expected in some cases and not fatal). Long
// statements go through a file: exec limits one argument to 128 KiB.
func psql(t *testing.T, srv *testpg.Server, host, sslmode, sql string, stdin string) string {
	t.Helper()
	arg := []string{"-c", sql}
	if len(sql) > 64<<10 {
		f := filepath.Join(t.TempDir(), "long.sql")
		if err := os.WriteFile(f, []byte(sql), 0o644); err != nil {
			t.Fatal(err)
		}
		arg = []string{"-f", f}
	}
	cmd := exec.Command("psql", append([]string{"-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=0", "-h", host, "-p", strconv.Itoa(srv.Port), "-U", "postgres", "-d", "postgres"}, arg...)...)
	cmd.Env = append(os.Environ(), "PGSSLMODE="+sslmode, "PGAPPNAME=vigil-test")
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("running psql: %v", err)
	}
	return string(out)
}

func TestCaptureEndToEnd(t *testing.T) {
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", "CREATE TABLE items (id int PRIMARY KEY, name text)"); err != nil {
		t.Fatal(err)
	}
	// A connection opened before the agent: its startup message is never seen.
	ctx := context.Background()
	early, err := pgx.Connect(ctx, srv.DSN("postgres", "postgres")+"&application_name=early")
	if err != nil {
		t.Fatal(err)
	}
	defer early.Close(ctx)
	var earlyPID int32
	if err := early.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&earlyPID); err != nil {
		t.Fatal(err)
	}

	// Unix capture always on: this test is about decoding; TestUnixOnDemand covers switching
	// it on from a client's connect, which races short sessions.
	_, col := startCapture(t, srv, func(cfg *Config) { cfg.UnixAlwaysOn = true })

	t.Run("simple query over TCP, several statements in one message", func(t *testing.T) {
		psql(t, srv, "127.0.0.1", "disable", "SELECT 'tcp-m1' AS a; INSERT INTO items VALUES (1, 'one'), (2, 'two')", "")
		got := col.Wait(t, 1, "tcp select", testsink.StatementContains("'tcp-m1'"))
		e := got[0]
		if e.Statement != "SELECT 'tcp-m1' AS a" || e.Rows != 1 || e.Kind != "SELECT" || e.DBUser != "postgres" || e.Database != "postgres" || e.Application != "vigil-test" {
			t.Errorf("select event: %s", testsink.Dump(got))
		}
		if e.Process == nil || e.Process.Comm != "psql" || e.BackendPID == 0 || !strings.HasPrefix(e.ClientAddr, "127.0.0.1:") || e.ServerAddr != srv.Addr() || e.TLS {
			t.Errorf("select event identity: %s", testsink.Dump(got))
		}
		ins := col.Wait(t, 1, "tcp insert", testsink.StatementContains("INSERT INTO items"))[0]
		if ins.Rows != 2 || ins.Kind != "INSERT" || len(ins.Tables) != 1 || ins.Tables[0] != "items" || ins.SessionID != e.SessionID {
			t.Errorf("insert event: %s", testsink.Dump([]*event.Event{ins}))
		}
	})

	t.Run("TLS in plaintext", func(t *testing.T) {
		psql(t, srv, "127.0.0.1", "require", "SELECT 'tls-m2'", "")
		e := col.Wait(t, 1, "tls select", testsink.StatementContains("'tls-m2'"))[0]
		if !e.TLS || e.DBUser != "postgres" || e.Rows != 1 || e.BackendPID == 0 || e.Process == nil || e.Process.Comm != "psql" {
			t.Errorf("tls event: %s", testsink.Dump([]*event.Event{e}))
		}
	})

	t.Run("Unix socket", func(t *testing.T) {
		psql(t, srv, srv.SocketDir, "disable", "SELECT 'unix-m3'", "")
		e := col.Wait(t, 1, "unix select", testsink.StatementContains("'unix-m3'"))[0]
		if e.DBUser != "postgres" || e.Rows != 1 || !strings.HasSuffix(e.ServerAddr, srv.SocketPath()) || e.Process == nil || e.Process.Comm != "psql" {
			t.Errorf("unix event: %s", testsink.Dump([]*event.Event{e}))
		}
	})

	t.Run("errors carry SQLSTATE", func(t *testing.T) {
		psql(t, srv, "127.0.0.1", "disable", "SELECT 1/0 AS err_m4", "")
		e := col.Wait(t, 1, "error", testsink.StatementContains("err_m4"))[0]
		if e.Error != "22012" {
			t.Errorf("error event: %s", testsink.Dump([]*event.Event{e}))
		}
	})

	t.Run("COPY both ways", func(t *testing.T) {
		psql(t, srv, "127.0.0.1", "disable", "COPY items FROM STDIN", "10\tten\n11\televen\n12\ttwelve\n")
		in := col.Wait(t, 1, "copy in", testsink.StatementContains("COPY items FROM STDIN"))[0]
		psql(t, srv, "127.0.0.1", "disable", "COPY (SELECT * FROM items ORDER BY id) TO STDOUT", "")
		out := col.Wait(t, 1, "copy out", testsink.StatementContains("TO STDOUT"))[0]
		if in.Rows != 3 || in.Kind != "COPY" || out.Rows != 5 {
			t.Errorf("copy events: %s", testsink.Dump([]*event.Event{in, out}))
		}
	})

	t.Run("extended protocol: prepared statements, pipelines, parameters", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, srv.DSN("postgres", "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		for i := 0; i < 5; i++ {
			var n string
			if err := conn.QueryRow(ctx, "SELECT name FROM items WHERE id = $1 /* ext-m5 */", 1).Scan(&n); err != nil {
				t.Fatal(err)
			}
		}
		got := col.Wait(t, 5, "prepared executions", testsink.StatementContains("ext-m5"))
		for _, e := range got {
			if len(e.Params) != 1 || e.Params[0] != "1" || e.Rows != 1 || e.Kind != "SELECT" {
				t.Errorf("prepared execution: %s", testsink.Dump([]*event.Event{e}))
			}
		}
		b := &pgx.Batch{}
		b.Queue("INSERT INTO items VALUES ($1, $2) /* batch-m6 */", 20, "twenty")
		b.Queue("UPDATE items SET name = $1 WHERE id = $2 /* batch-m6 */", "TWENTY", 20)
		b.Queue("DELETE FROM items WHERE id = $1 /* batch-m6 */", 20)
		if err := conn.SendBatch(ctx, b).Close(); err != nil {
			t.Fatal(err)
		}
		got = col.Wait(t, 3, "pipelined batch", testsink.StatementContains("batch-m6"))
		kinds := []string{}
		for _, e := range got {
			kinds = append(kinds, fmt.Sprintf("%s:%d", e.Kind, e.Rows))
		}
		if strings.Join(kinds, " ") != "INSERT:1 UPDATE:1 DELETE:1" {
			t.Errorf("batch kinds %v: %s", kinds, testsink.Dump(got))
		}
	})

	t.Run("connection opened before the agent", func(t *testing.T) {
		if _, err := early.Exec(ctx, "SELECT 'early-m7'"); err != nil {
			t.Fatal(err)
		}
		e := col.Wait(t, 1, "early connection", testsink.StatementContains("early-m7"))[0]
		if e.DBUser != "postgres" || e.Database != "postgres" || e.BackendPID != earlyPID || e.Process == nil || e.Process.PID != int32(os.Getpid()) {
			t.Errorf("early event (want backend %d, process %d): %s", earlyPID, os.Getpid(), testsink.Dump([]*event.Event{e}))
		}
	})

	t.Run("long statements whole, over the cap truncated", func(t *testing.T) {
		long := "SELECT '" + strings.Repeat("x", 300_000) + "' AS long_m8"
		psql(t, srv, "127.0.0.1", "disable", long, "")
		e := col.Wait(t, 1, "long statement", testsink.StatementContains("long_m8"))[0]
		if e.Statement != long || e.StatementTruncated {
			t.Errorf("300 KB statement: got %d bytes, truncated=%v", len(e.Statement), e.StatementTruncated)
		}
		huge := "SELECT '" + strings.Repeat("y", 1_200_000) + "' AS huge_m9"
		psql(t, srv, "127.0.0.1", "disable", huge, "")
		e = col.Wait(t, 1, "huge statement", func(e *event.Event) bool { return strings.HasPrefix(e.Statement, "SELECT 'yyyy") })[0]
		if !e.StatementTruncated || len(e.Statement) != 1<<20 || e.Rows != 1 {
			t.Errorf("1.2 MB statement: got %d bytes, truncated=%v rows=%d", len(e.Statement), e.StatementTruncated, e.Rows)
		}
	})

	t.Run("passwords never reach an event", func(t *testing.T) {
		dsn := fmt.Sprintf("postgres://vigil_scram:%s@%s/postgres?sslmode=disable", srv.Password, srv.Addr())
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(ctx, "SELECT 'scram-m10'"); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
		e := col.Wait(t, 1, "scram session", testsink.StatementContains("scram-m10"))[0]
		if e.DBUser != "vigil_scram" {
			t.Errorf("scram event: %s", testsink.Dump([]*event.Event{e}))
		}
		// The SCRAM exchange never reaches an event. (Passwords inside statements, such as
		// testpg's own CREATE ROLE … PASSWORD, are the trail's to redact: check that they are.)
		for _, e := range col.Events() {
			e.Statement = sqlparse.RedactSecrets(e.Statement)
			if j := testsink.Dump([]*event.Event{e}); strings.Contains(j, srv.Password) {
				t.Errorf("the password appears in an event: %s", j)
			}
		}
	})
}
