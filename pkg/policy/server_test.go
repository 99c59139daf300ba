package policy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/vigil-db/vigil/internal/testpg"
)

// TestEvasionsParseOnServer sends every evasion the default policy decides on to a real
// PostgreSQL 15 as a role without privileges, inside a rolled-back transaction: those
// Vigil parsed must get past the server's parser (they fail later, on permissions or
// missing objects), and those Vigil calls unparseable must be syntax errors there as well.
// A guardrail tested only against our own parser could be judging a statement the server
// would read differently.
func TestEvasionsParseOnServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", "CREATE ROLE vigil_probe LOGIN NOSUPERUSER"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var conn *pgx.Conn
	connect := func() {
		cfg, err := pgx.ParseConfig(srv.DSN("vigil_probe", "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		if conn, err = pgx.ConnectConfig(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	connect()
	defer func() { conn.Close(ctx) }()
	e, err := NewEngine(Default())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range evasions {
		if strings.IndexByte(tc.sql, 0) >= 0 {
			continue // cannot be sent in a Query message at all
		}
		if conn.IsClosed() {
			connect()
		}
		if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
			conn.Close(ctx)
			connect()
			if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
		}
		_, err := conn.Exec(ctx, tc.sql)
		_, _ = conn.Exec(ctx, "ROLLBACK")
		var pe *pgconn.PgError
		serverSyntaxError := errors.As(err, &pe) && pe.Code == "42601"
		parsed := e.Decide(&Request{Protocol: "postgres", SQL: tc.sql}).Info.Parsed
		if parsed == serverSyntaxError {
			t.Errorf("%q: Vigil parsed=%v, server: %v", tc.sql, parsed, err)
		}
	}
}
