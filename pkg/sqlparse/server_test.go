package sqlparse

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/vigil-db/vigil/internal/testpg"
)

// pg17Only are corpus statements in syntax newer than the PostgreSQL 15 test server.
var pg17Only = map[string]bool{
	"MERGE INTO t USING s ON t.id = s.id WHEN NOT MATCHED BY SOURCE THEN DELETE": true,
}

// TestCorpusParsesOnServer checks the classifier's grammar against a real PostgreSQL: every
// statement the corpus calls valid must get past the server's parser, and every statement
// called unparseable must be a syntax error there too. Statements run as a role without
// privileges, inside a transaction that is rolled back, so the dangerous ones fail on
// permissions (or missing objects) after parsing, which is all this test looks at.
func TestCorpusParsesOnServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", "CREATE ROLE vigil_probe LOGIN NOSUPERUSER"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	connect := func() *pgx.Conn {
		cfg, err := pgx.ParseConfig(srv.DSN("vigil_probe", "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	conn := connect()
	defer func() { conn.Close(ctx) }()
	run := func(sql string) error {
		if conn.IsClosed() {
			conn = connect()
		}
		if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
			conn.Close(ctx)
			conn = connect()
			if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
		}
		_, err := conn.Exec(ctx, sql)
		if _, rerr := conn.Exec(ctx, "ROLLBACK"); rerr != nil {
			conn.Close(ctx)
		}
		return err
	}
	syntaxError := func(err error) bool {
		var pe *pgconn.PgError
		return errors.As(err, &pe) && pe.Code == "42601"
	}
	for _, tc := range corpus {
		if tc.sql == "" || pg17Only[tc.sql] {
			continue
		}
		if err := run(tc.sql); syntaxError(err) {
			t.Errorf("%q: classified as %s but PostgreSQL 15 says: %v", tc.sql, tc.w.kind, err)
		}
	}
	for _, sql := range []string{"SELEC 1", "SELECT 'unterminated", "DELETE FROM", "SELECT * FROM t WHERE"} {
		if err := run(sql); !syntaxError(err) {
			t.Errorf("%q: unparseable to Vigil, but PostgreSQL 15 says: %v", sql, err)
		}
	}
}
