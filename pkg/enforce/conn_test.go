package enforce

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestTLSAndSCRAMPassThrough(t *testing.T) {
	h := start(t, func(c *Config) { c.RequireClientTLS = true })
	ctx := context.Background()
	// Plaintext is refused when TLS is required.
	if _, err := pgx.Connect(ctx, h.dsn("postgres", "postgres", "sslmode=disable")); pgCode(err) != "28000" {
		t.Fatalf("plaintext client: %v", err)
	}
	// SCRAM through the proxy, TLS on the client side (psql: libpq's own SCRAM).
	cmdOut, err := runPsql(h, "sslmode=require password="+h.pg.Password, "SELECT current_user")
	if err != nil || cmdOut != "vigil_scram" {
		t.Fatalf("psql sslmode=require with SCRAM: %q %v", cmdOut, err)
	}
	c, err := pgx.Connect(ctx, "postgres://vigil_scram:"+h.pg.Password+"@"+h.addr+"/postgres?sslmode=require")
	if err != nil {
		t.Fatalf("pgx sslmode=require with SCRAM: %v", err)
	}
	defer c.Close(ctx)
	var u string
	if err := c.QueryRow(ctx, "SELECT current_user").Scan(&u); err != nil || u != "vigil_scram" {
		t.Fatal(u, err)
	}
	if _, err := pgx.Connect(ctx, "postgres://vigil_scram:wrong@"+h.addr+"/postgres?sslmode=require"); pgCode(err) != "28P01" {
		t.Fatalf("wrong password: %v", err)
	}
	// No secret reaches an event.
	for _, e := range h.log.Events() {
		if strings.Contains(e.Statement, h.pg.Password) {
			t.Fatalf("password in event %+v", e)
		}
	}
}

func runPsql(h *harness, conninfo, sql string) (string, error) {
	return runCmd("psql", "-X", "-A", "-t", "-c", sql, "host=127.0.0.1 port="+h.port()+" user=vigil_scram dbname=postgres "+conninfo)
}

func TestUpstreamTLS(t *testing.T) {
	h := start(t, func(c *Config) { c.UpstreamTLS = insecureTLS() })
	c := h.connect(t, "postgres")
	var ssl bool
	if err := c.QueryRow(context.Background(), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
		t.Fatalf("upstream connection not TLS: %v %v", ssl, err)
	}
}

func TestCancelReachesUpstream(t *testing.T) {
	h := start(t)
	c := h.connect(t, "analyst")
	ctx := context.Background()
	errc := make(chan error, 1)
	t0 := time.Now()
	go func() {
		_, err := c.Exec(ctx, "SELECT pg_sleep(20)")
		errc <- err
	}()
	time.Sleep(300 * time.Millisecond)
	// pgconn sends a CancelRequest with the key the proxy gave it, on a new connection to
	// the proxy, as libpq does on Ctrl-C in psql.
	if err := c.PgConn().CancelRequest(ctx); err != nil {
		t.Fatal(err)
	}
	err := <-errc
	if pgCode(err) != "57014" || time.Since(t0) > 10*time.Second {
		t.Fatalf("pg_sleep not cancelled: %v after %v", err, time.Since(t0))
	}
	if got := metricValue(t, h, "vigil_proxy_cancel_requests_total", "forwarded"); got != 1 {
		t.Fatalf("forwarded cancels = %v", got)
	}
	var one int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("session after cancel: %v", err)
	}
	if e := h.log.Find(t, "pg_sleep(20)"); e.Error != "57014" {
		t.Fatalf("event of cancelled statement: %+v", e)
	}
}

func TestCopyBothWays(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	c := h.connect(t, "postgres")
	if _, err := c.Exec(ctx, "CREATE TABLE bulk (id int, v text)"); err != nil {
		t.Fatal(err)
	}
	rows := make([][]any, 5000)
	for i := range rows {
		rows[i] = []any{i, strings.Repeat("x", i%300)}
	}
	n, err := c.CopyFrom(ctx, pgx.Identifier{"bulk"}, []string{"id", "v"}, pgx.CopyFromRows(rows))
	if err != nil || n != 5000 {
		t.Fatalf("CopyFrom: %d %v", n, err)
	}
	var buf bytes.Buffer
	tag, err := c.PgConn().CopyTo(ctx, &buf, "COPY bulk TO STDOUT")
	if err != nil || tag.RowsAffected() != 5000 || strings.Count(buf.String(), "\n") != 5000 {
		t.Fatalf("CopyTo: %v %v", tag, err)
	}
	// Text COPY FROM STDIN with psql, and a failing COPY keeps the session usable.
	out, err := runCmdStdin("1\ta\n2\tb\n", "psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", h.port(), "-U", "postgres", "-d", "postgres",
		"-c", `\copy bulk from stdin`, "-c", "SELECT count(*) FROM bulk")
	if err != nil || !strings.HasSuffix(out, "5002") {
		t.Fatalf("psql \\copy: %q %v", out, err)
	}
	if _, err := c.PgConn().CopyFrom(ctx, strings.NewReader("x\ty\n"), "COPY bulk FROM STDIN"); pgCode(err) != "22P02" {
		t.Fatalf("bad COPY data: %v", err)
	}
	var cnt int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM bulk").Scan(&cnt); err != nil || cnt != 5002 {
		t.Fatalf("after failed COPY: %d %v", cnt, err)
	}
}
