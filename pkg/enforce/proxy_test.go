package enforce

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/internal/testsink"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/mask"
	"github.com/vigil-db/vigil/pkg/policy"
)

// testPolicy is the shipped default plus sensitive columns of the test schema, and raw
// access for the "postgres" user.
func testPolicy(t testing.TB) *policy.Engine {
	t.Helper()
	p := policy.Default()
	p.Sensitive.Columns = append(p.Sensitive.Columns,
		policy.SensitiveColumns{Tables: []string{"customers"}, Columns: []string{"email"}, Strategy: &mask.Strategy{Kind: mask.Partial, KeepLast: 4}},
		policy.SensitiveColumns{Tables: []string{"customers"}, Columns: []string{"full_name"}},
		policy.SensitiveColumns{Tables: []string{"customers"}, Columns: []string{"ssn"}, Strategy: &mask.Strategy{Kind: mask.Token}},
		policy.SensitiveColumns{Tables: []string{"customers"}, Columns: []string{"birth_date"}},
	)
	p.Rules = append(p.Rules, policy.Rule{Name: "admin-raw", Match: policy.Match{DBUsers: []string{"postgres", "vigil_scram"}}, Action: policy.ActionAllow, Raw: true})
	e, err := policy.NewEngine(p, policy.WithTokenKey([]byte("test-key")))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

const schemaSQL = `
CREATE ROLE analyst LOGIN;
CREATE TABLE customers (id int PRIMARY KEY, full_name text, email text UNIQUE, ssn text, birth_date date, notes text, score int);
INSERT INTO customers VALUES
 (1, 'Alice Liddell', 'alice@example.com', '123-45-6789', '1990-01-02', 'call +1 415 555 0100', 10),
 (2, 'Bob Builder', 'bob@example.org', '536-22-8761', '1985-05-06', 'card 4111 1111 1111 1111', 20);
CREATE TABLE accounts (id int PRIMARY KEY, balance int);
INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 10) g;
GRANT SELECT, INSERT, UPDATE, DELETE ON customers, accounts TO analyst;
`

type harness struct {
	pg   *testpg.Server
	srv  *Server
	addr string
	log  *testsink.Collector
	reg  *prometheus.Registry
	logs *lockedBuffer // the proxy's own log
}

type harnessOpt func(*Config)

func start(t *testing.T, opts ...harnessOpt) *harness {
	t.Helper()
	pg := testpg.Start(t)
	if _, err := pg.Psql("postgres", schemaSQL); err != nil {
		t.Fatal(err)
	}
	return startOn(t, pg, opts...)
}

func startOn(t testing.TB, pg *testpg.Server, opts ...harnessOpt) *harness {
	t.Helper()
	return startWith(t, pg, testPolicy(t), opts...)
}

// startWith is startOn with the policy given.
func startWith(t testing.TB, pg *testpg.Server, pol Policy, opts ...harnessOpt) *harness {
	t.Helper()
	cert := selfSigned(t)
	cfg := Config{Listen: "127.0.0.1:0", Upstream: pg.Addr(), ClientTLS: &tls.Config{Certificates: []tls.Certificate{cert}}}
	for _, o := range opts {
		o(&cfg)
	}
	h := &harness{pg: pg, log: &testsink.Collector{}, reg: prometheus.NewRegistry(), logs: &lockedBuffer{}}
	srv, err := New(cfg, pol, h.log, h.reg, slog.New(slog.NewTextHandler(h.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatal(err)
	}
	h.srv, h.addr = srv, srv.Addr().String()
	return h
}

// lockedBuffer collects a proxy's log lines (written from its session goroutines).
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (h *harness) port() string { _, p, _ := net.SplitHostPort(h.addr); return p }

// dsn is a libpq/pgx URL through the proxy.
func (h *harness) dsn(user, db string, extra ...string) string {
	q := "sslmode=disable"
	if len(extra) > 0 {
		q = strings.Join(extra, "&")
	}
	return fmt.Sprintf("postgres://%s@%s/%s?%s", user, h.addr, db, q)
}

func (h *harness) connect(t *testing.T, user string, extra ...string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, h.dsn(user, "postgres", extra...))
	if err != nil {
		t.Fatalf("connecting through the proxy: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// psql runs psql through the proxy and returns its combined output.
func (h *harness) psql(t *testing.T, user string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("psql", append([]string{"-X", "-A", "-t", "-h", "127.0.0.1", "-p", h.port(), "-U", user, "-d", "postgres"}, args...)...)
	cmd.Env = append(cmd.Environ(), "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=10")
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func selfSigned(t testing.TB) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vigil-proxy"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func (h *harness) tableExists(t *testing.T, name string) {
	t.Helper()
	out, err := h.pg.Psql("postgres", "SELECT count(*) FROM "+name)
	if err != nil {
		t.Fatalf("table %s is gone: %v", name, err)
	}
	if n, _ := strconv.Atoi(out); n == 0 {
		t.Fatalf("table %s is empty", name)
	}
}

func TestSimpleAndExtendedProtocol(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	c := h.connect(t, "postgres")
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM accounts WHERE balance = $1", 100).Scan(&n); err != nil || n != 10 {
		t.Fatalf("extended query: n=%d err=%v", n, err)
	}
	out, err := h.psql(t, "postgres", "-c", "SELECT id FROM accounts ORDER BY id LIMIT 3")
	if err != nil || out != "1\n2\n3" {
		t.Fatalf("psql: %q %v", out, err)
	}
	// Prepared statement reused many times, and a multi-statement simple query.
	for i := 1; i <= 5; i++ {
		var b int
		if err := c.QueryRow(ctx, "SELECT balance FROM accounts WHERE id = $1", i).Scan(&b); err != nil || b != 100 {
			t.Fatalf("prepared: %v %d", err, b)
		}
	}
	if _, err := c.Exec(ctx, "UPDATE accounts SET balance = balance + 1 WHERE id = 1; UPDATE accounts SET balance = balance - 1 WHERE id = 1", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	e := h.log.Find(t, "SELECT count(*) FROM accounts")
	if e.Source != event.SourceProxy || e.Rows != 1 || e.DBUser != "postgres" || e.Database != "postgres" || e.BackendPID == 0 ||
		e.SessionID == "" || e.ServerAddr != h.pg.Addr() || e.Kind != "SELECT" || e.Decision != event.DecisionAllow {
		t.Fatalf("event: %+v", e)
	}
	// One event per statement of the multi-statement Query, each with its own rows.
	for _, sql := range []string{"UPDATE accounts SET balance = balance + 1 WHERE id = 1", "UPDATE accounts SET balance = balance - 1 WHERE id = 1"} {
		if e := h.log.Find(t, sql); e.Statement != sql || e.Rows != 1 || e.Kind != "UPDATE" {
			t.Fatalf("multi-statement event: %+v", e)
		}
	}
}

func runCmd(name string, args ...string) (string, error) { return runCmdStdin("", name, args...) }

func runCmdStdin(stdin, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(cmd.Environ(), "PGCONNECT_TIMEOUT=10")
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func insecureTLS() *tls.Config { return &tls.Config{InsecureSkipVerify: true} }

// metricValue reads a counter (with the given label value, if any) from the harness registry.
func metricValue(t *testing.T, h *harness, name, label string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() != "listener" && lp.GetValue() == label {
					match = true
				}
			}
			if match {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func asPgError(err error) *pgconn.PgError {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe
	}
	return nil
}

// startPG starts PostgreSQL with the test schema for benchmarks and fuzz targets.
func startPG(tb testing.TB) *testpg.Server {
	tb.Helper()
	pg := testpg.Start(tb)
	if _, err := pg.Psql("postgres", schemaSQL); err != nil {
		tb.Fatal(err)
	}
	return pg
}

// startOnAddr runs a proxy in front of an arbitrary upstream address (fuzzing a hostile
// upstream); it stops when the process ends.
func startOnAddr(t testing.TB, upstream string) *harness {
	h := &harness{log: &testsink.Collector{}, reg: prometheus.NewRegistry()}
	srv, err := New(Config{Listen: "127.0.0.1:0", Upstream: upstream, DialTimeout: 2 * time.Second}, testPolicy(t), h.log, h.reg,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		panic(err)
	}
	go srv.Serve(context.Background())
	<-srv.Ready()
	h.srv, h.addr = srv, srv.Addr().String()
	return h
}
