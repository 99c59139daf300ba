package enforce

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestClientEncoding: a switch to a client-only encoding (whose characters can hide a quote
// from the proxy) is refused before the server makes it, however it is written; a session
// that gets such an encoding from a role default still runs ASCII statements, refuses
// others, and recovers with SET client_encoding TO 'UTF8'.
func TestClientEncoding(t *testing.T) {
	h := start(t)
	if _, err := h.pg.Psql("postgres", "CREATE ROLE sjis_user LOGIN SUPERUSER; ALTER ROLE sjis_user SET client_encoding = 'SJIS'"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	connect := func(user string) *pgconn.PgConn {
		cfg, err := pgconn.ParseConfig(h.dsn(user, "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		delete(cfg.RuntimeParams, "client_encoding") // let the role's default apply
		c, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("connecting as %s: %v", user, err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		return c
	}
	exec := func(c *pgconn.PgConn, sql string) string {
		_, err := c.Exec(ctx, sql).ReadAll()
		return pgCode(err)
	}

	c := connect("postgres")
	for _, sql := range []string{
		"SET client_encoding TO 'SJIS'",
		"SET client_encoding = sjis",
		"SET NAMES 'BIG5'",
		`SET client_encoding TO U&'\0053JIS'`,
		"SELECT set_config('client_encoding', 'GB' || 'K', false)",
		"SELECT set_config('client_encoding', 'UHC', false)",
	} {
		if code := exec(c, sql); code != "22023" {
			t.Errorf("%s: SQLSTATE %q, want 22023", sql, code)
		}
		if enc := c.ParameterStatus("client_encoding"); enc != "UTF8" {
			t.Fatalf("after %s the server's client_encoding is %s", sql, enc)
		}
	}
	for _, sql := range []string{"SET client_encoding TO 'LATIN1'", "RESET client_encoding", "SET client_encoding TO DEFAULT"} {
		if code := exec(c, sql); code != "" {
			t.Errorf("%s: SQLSTATE %q, want success", sql, code)
		}
	}

	s := connect("sjis_user")
	if enc := s.ParameterStatus("client_encoding"); enc != "SJIS" {
		t.Fatalf("role default client_encoding: %q", enc)
	}
	if code := exec(s, "SELECT 1"); code != "" {
		t.Errorf("ASCII statement under SJIS: SQLSTATE %q, want success", code)
	}
	if code := exec(s, "SELECT 'é'"); code != "22023" {
		t.Errorf("non-ASCII statement under SJIS: SQLSTATE %q, want 22023", code)
	}
	if code := exec(s, "SET client_encoding TO 'UTF8'"); code != "" {
		t.Fatalf("SET client_encoding TO 'UTF8' under SJIS: SQLSTATE %q", code)
	}
	if code := exec(s, "SELECT 'é'"); code != "" {
		t.Errorf("non-ASCII statement after switching back to UTF8: SQLSTATE %q", code)
	}
}
