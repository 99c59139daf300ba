package enforce

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/event"
)

// benchTarget starts PostgreSQL with the test schema and a proxy in front of it.
func benchTarget(b *testing.B) (pg *testpg.Server, proxyAddr string) {
	b.Helper()
	pg = testpg.Start(b)
	if _, err := pg.Psql("postgres", schemaSQL); err != nil {
		b.Fatal(err)
	}
	srv, err := New(Config{Listen: "127.0.0.1:0", Upstream: pg.Addr()}, testPolicy(b),
		event.SinkFunc(func(*event.Event) {}), prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go srv.Serve(ctx)
	b.Cleanup(cancel)
	<-srv.Ready()
	return pg, srv.Addr().String()
}

// BenchmarkRelay measures one simple-protocol point query per iteration, direct and through
// the proxy, for a raw principal and for a masked one (rows classified and detected).
func BenchmarkRelay(b *testing.B) {
	pg, proxy := benchTarget(b)
	for _, tc := range []struct{ name, addr, user string }{
		{"direct", pg.Addr(), "postgres"},
		{"proxy-raw", proxy, "postgres"},
		{"proxy-masked", proxy, "analyst"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			c, err := pgconn.Connect(ctx, fmt.Sprintf("postgres://%s@%s/postgres?sslmode=disable", tc.user, tc.addr))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close(ctx)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Exec(ctx, "SELECT id, email, score FROM customers WHERE id = 1").ReadAll(); err != nil {
					b.Fatal(err)
				}
			}
		})
		// A prepared statement executed without a Describe of its portal (pgx's default):
		// the proxy Describes it to learn its columns, for masking or for the egress ledger.
		b.Run(tc.name+"-prepared", func(b *testing.B) {
			ctx := context.Background()
			c, err := pgconn.Connect(ctx, fmt.Sprintf("postgres://%s@%s/postgres?sslmode=disable", tc.user, tc.addr))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close(ctx)
			if _, err := c.Prepare(ctx, "point", "SELECT id, email, score FROM customers WHERE id = $1", nil); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if r := c.ExecPrepared(ctx, "point", [][]byte{[]byte("1")}, nil, nil).Read(); r.Err != nil {
					b.Fatal(r.Err)
				}
			}
		})
	}
}

// TestPgbenchComparison runs pgbench -S (select-only, 8 clients, a few seconds) against
// PostgreSQL directly, through the proxy and through PgBouncer in session mode. It is a
// measurement, not a check: run it with VIGIL_PGBENCH=1 (and -v) on a quiet machine.
func TestPgbenchComparison(t *testing.T) {
	if os.Getenv("VIGIL_PGBENCH") == "" {
		t.Skip("set VIGIL_PGBENCH=1 to run the pgbench comparison")
	}
	pg := testpg.Start(t, testpg.Options{Config: []string{"max_connections = 100"}})
	if out, err := exec.Command("pgbench", "-i", "-q", "-s", "5", "-h", pg.Host, "-p", fmt.Sprint(pg.Port), "-U", "postgres", "postgres").CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v %s", err, out)
	}
	h := startOn(t, pg)
	bouncer := startPgBouncer(t, pg)
	dur := os.Getenv("VIGIL_PGBENCH_SECONDS")
	if dur == "" {
		dur = "5"
	}
	tps := regexp.MustCompile(`tps = ([0-9.]+)`)
	lat := regexp.MustCompile(`latency average = ([0-9.]+) ms`)
	for _, target := range []struct{ name, port, user string }{
		{"direct", fmt.Sprint(pg.Port), "postgres"},
		{"pgbouncer-session", bouncer, "postgres"},
		{"vigil-raw", h.port(), "postgres"},
		{"vigil-masked", h.port(), "analyst_bench"},
	} {
		if only := os.Getenv("VIGIL_PGBENCH_TARGET"); only != "" && only != target.name {
			continue
		}
		if target.user == "analyst_bench" {
			if _, err := pg.Psql("postgres", "DO $$ BEGIN CREATE ROLE analyst_bench LOGIN; EXCEPTION WHEN duplicate_object THEN END $$; GRANT SELECT ON ALL TABLES IN SCHEMA public TO analyst_bench"); err != nil {
				t.Fatal(err)
			}
		}
		for _, mode := range []string{"simple", "extended"} {
			cmd := exec.Command("pgbench", "-n", "-S", "-M", mode, "-c", "8", "-j", "2", "-T", dur, "-h", "127.0.0.1", "-p", target.port, "-U", target.user, "postgres")
			cmd.Env = append(cmd.Environ(), "PGSSLMODE=disable") // PgBouncer here has no TLS: compare plaintext
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", target.name, err, out)
			}
			t.Logf("%-18s %-8s tps=%s latency_avg_ms=%s", target.name, mode, match(tps, out), match(lat, out))
		}
	}
}

func match(re *regexp.Regexp, out []byte) string {
	if m := re.FindSubmatch(out); m != nil {
		return string(m[1])
	}
	return "?"
}

// startPgBouncer runs PgBouncer in session mode in front of pg and returns its port.
func startPgBouncer(t *testing.T, pg *testpg.Server) string {
	t.Helper()
	port, err := testpg.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "vigil-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777) // pgbouncer runs as postgres and writes its log here
	ini := fmt.Sprintf(`[databases]
postgres = host=127.0.0.1 port=%d dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s/users.txt
pool_mode = session
default_pool_size = 50
max_client_conn = 200
ignore_startup_parameters = extra_float_digits,options
logfile = %s/pgbouncer.log
`, pg.Port, port, dir, dir)
	os.WriteFile(filepath.Join(dir, "users.txt"), []byte(`"postgres" ""`+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o644)
	cmd := exec.Command("runuser", "-u", "postgres", "--", "pgbouncer", filepath.Join(dir, "pgbouncer.ini"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 100; i++ {
		if out, err := exec.Command("psql", "-X", "-h", "127.0.0.1", "-p", fmt.Sprint(port), "-U", "postgres", "-c", "select 1", "postgres").CombinedOutput(); err == nil {
			return fmt.Sprint(port)
		} else if i == 99 {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Fatalf("pgbouncer: %s\n%s", out, log)
		}
		exec.Command("sleep", "0.05").Run()
	}
	return ""
}
