package enforce

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/vigil-db/vigil/pkg/event"
)

func TestBlockedStatementKeepsSessionAndTransactionState(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	c := h.connect(t, "analyst")

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec, pgx.QueryExecModeCacheStatement} {
		_, err := c.Exec(ctx, "DROP TABLE accounts", mode)
		if pgCode(err) != "42501" || !strings.Contains(err.Error(), `"drop"`) {
			t.Fatalf("mode %v: DROP: %v", mode, err)
		}
		// The session is usable afterwards.
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM accounts", mode).Scan(&n); err != nil || n != 10 {
			t.Fatalf("mode %v: after refusal: %v", mode, err)
		}
	}

	// Inside a transaction block the refusal fails the transaction on both sides.
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = 0 WHERE id = 1", mode); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "TRUNCATE accounts", mode); pgCode(err) != "42501" {
			t.Fatalf("TRUNCATE in tx: %v", err)
		}
		if st := c.PgConn().TxStatus(); st != 'E' {
			t.Fatalf("mode %v: tx status after refusal = %c, want E", mode, st)
		}
		if _, err := tx.Exec(ctx, "SELECT 1", mode); pgCode(err) != "25P02" {
			t.Fatalf("mode %v: statement in failed tx: %v", mode, err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if st := c.PgConn().TxStatus(); st != 'I' {
			t.Fatalf("tx status after rollback = %c", st)
		}
	}
	var b int
	if err := c.QueryRow(ctx, "SELECT balance FROM accounts WHERE id = 1").Scan(&b); err != nil || b != 100 {
		t.Fatalf("the UPDATE before the refusal must have been rolled back: %d %v", b, err)
	}
	h.tableExists(t, "accounts")

	e := h.log.Find(t, "TRUNCATE accounts")
	if e.Decision != event.DecisionBlock || e.Rule != "truncate" || e.Error != "42501" || e.Kind != "TRUNCATE" {
		t.Fatalf("event: %+v", e)
	}
}

func TestBlockedInPipelineSkipsToSync(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	c := h.connect(t, "analyst")
	pc := c.PgConn()

	// One pipeline: an insert, a refused DELETE without WHERE, another insert, then Sync.
	// Like a server error, the refusal skips everything up to Sync and rolls back the
	// implicit transaction.
	batch := &pgconn.Batch{}
	batch.ExecParams("INSERT INTO accounts VALUES (100, 1)", nil, nil, nil, nil)
	batch.ExecParams("DELETE FROM accounts", nil, nil, nil, nil)
	batch.ExecParams("INSERT INTO accounts VALUES (101, 1)", nil, nil, nil, nil)
	res, err := pc.ExecBatch(ctx, batch).ReadAll()
	if pgCode(err) != "42501" {
		t.Fatalf("batch: %v %v", res, err)
	}
	out, err := h.pg.Psql("postgres", "SELECT count(*) FROM accounts")
	if err != nil || out != "10" {
		t.Fatalf("rows after refused pipeline: %q %v", out, err)
	}

	// A manual pipeline with two Syncs: the second half runs.
	p := pc.StartPipeline(ctx)
	p.SendQueryParams("DELETE FROM accounts", nil, nil, nil, nil)
	p.SendPipelineSync()
	p.SendQueryParams("SELECT count(*) FROM accounts", nil, nil, nil, nil)
	p.SendPipelineSync()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		r, err := p.GetResults()
		if err != nil {
			got = append(got, "err:"+pgCode(err))
			continue
		}
		switch r := r.(type) {
		case *pgconn.ResultReader:
			rr := r.Read()
			if rr.Err != nil {
				got = append(got, "err:"+pgCode(rr.Err))
			} else if len(rr.Rows) > 0 {
				got = append(got, string(rr.Rows[0][0]))
			}
		case *pgconn.PipelineSync:
			got = append(got, "sync")
		case nil:
		}
		if len(got) >= 4 {
			break
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "err:42501,sync,10,sync" {
		t.Fatalf("pipeline results: %v", got)
	}
	h.tableExists(t, "accounts")
}

func TestEvasionCorpus(t *testing.T) {
	h := start(t)
	if _, err := h.pg.Psql("postgres", `CREATE FUNCTION wipe() RETURNS void LANGUAGE sql AS 'DELETE FROM accounts'; GRANT EXECUTE ON FUNCTION wipe() TO analyst; CREATE TABLE "Accounts2" (id int); INSERT INTO "Accounts2" VALUES (1)`); err != nil {
		t.Fatal(err)
	}
	blocked := []string{
		"DROP TABLE accounts",
		"drop table accounts",
		"/* harmless */ DROP /* really */ TABLE accounts",
		"-- comment\nDROP TABLE accounts",
		`DROP TABLE "accounts"`,
		`DROP TABLE U&"\0061ccounts"`,
		`DROP TABLE "Accounts2"`,
		"SELECT 1; DROP TABLE accounts",
		"SELECT 1;DROP TABLE accounts;SELECT 2",
		"WITH d AS (DELETE FROM accounts RETURNING *) SELECT count(*) FROM d",
		"EXPLAIN ANALYZE DELETE FROM accounts",
		"DELETE FROM accounts WHERE true",
		"DELETE FROM accounts WHERE 1 = 1",
		"UPDATE accounts SET balance = 0",
		"TRUNCATE accounts",
		"PREPARE p AS DELETE FROM accounts",
		"DO $$ BEGIN EXECUTE 'DROP TABLE accounts'; END $$",
		"DO LANGUAGE plpgsql $x$ BEGIN DELETE FROM accounts; END $x$",
		"SELECT pg_terminate_backend(pg_backend_pid())",
		"COPY accounts TO '/tmp/x'",
		"COPY accounts FROM PROGRAM 'true'",
		"SELECT pg_read_file('/etc/passwd')",
		"SET ROLE postgres",
		"SET session_replication_role = replica",
		"SELECT set_config('role', 'postgres', false)",
		"ALTER SYSTEM SET fsync = off",
		"DROP TABLE accounts garbage garbage",
		"DRÖP TABLE accounts",
		"SELECT * FROM accounts; DELETE FROM accounts",
	}
	c := h.connect(t, "analyst")
	ctx := context.Background()
	for _, sql := range blocked {
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
			_, err := c.Exec(ctx, sql, mode)
			if pgCode(err) != "42501" {
				t.Errorf("not refused (mode %v): %q: %v", mode, sql, err)
			}
		}
	}
	// psql sends a script line with several statements as one Query message.
	out, _ := h.psql(t, "analyst", "-c", "SELECT 1; DELETE FROM accounts")
	if !strings.Contains(out, "refused by policy") {
		t.Errorf("psql multi-statement: %s", out)
	}
	// PREPARE was refused, so EXECUTE finds nothing.
	if _, err := c.Exec(ctx, "EXECUTE p", pgx.QueryExecModeSimpleProtocol); err == nil {
		t.Errorf("EXECUTE of a refused PREPARE succeeded")
	}
	h.tableExists(t, "accounts")
	h.tableExists(t, `"Accounts2"`)
	if out, _ := h.pg.Psql("postgres", "SELECT count(*) FROM accounts WHERE balance = 100"); out != "10" {
		t.Fatalf("accounts changed: %s", out)
	}

	// Allowed statements are classified, not just passed.
	if _, err := c.Exec(ctx, "WITH x AS (SELECT 1) SELECT * FROM x"); err != nil {
		t.Fatal(err)
	}
	if e := h.log.Find(t, "EXPLAIN ANALYZE DELETE"); e.Kind != "DELETE" || e.Decision != event.DecisionBlock {
		t.Fatalf("EXPLAIN ANALYZE DELETE event: %+v", e)
	}
}

func TestStartupOptionsJudged(t *testing.T) {
	h := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, opt := range []string{
		"options=-c%20session_replication_role%3Dreplica",
		"options=-c%20role%3Dpostgres",
		"options=--role%3Dpostgres",
		"options=-csession_authorization%3Dpostgres",
		"session_replication_role=replica",
		"options=-d%205",
		"replication=database",
		"client_encoding=SJIS",
	} {
		c, err := pgx.Connect(ctx, h.dsn("analyst", "postgres", "sslmode=disable", opt))
		if err == nil {
			var role string
			_ = c.QueryRow(ctx, "SELECT current_setting('session_replication_role') || '/' || current_user").Scan(&role)
			c.Close(ctx)
			t.Errorf("%s: connected (%s)", opt, role)
			continue
		}
		if code := pgCode(err); code != "42501" && code != "22023" {
			t.Errorf("%s: %v", opt, err)
		}
	}
	// Harmless settings pass.
	c, err := pgx.Connect(ctx, h.dsn("analyst", "postgres", "sslmode=disable", "options=-c%20statement_timeout%3D5s", "application_name=probe"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var st string
	if err := c.QueryRow(ctx, "SHOW statement_timeout").Scan(&st); err != nil || st != "5s" {
		t.Fatalf("statement_timeout = %q %v", st, err)
	}
	if e := h.log.Find(t, "SHOW statement_timeout"); e.Application != "probe" {
		t.Fatalf("application: %+v", e)
	}
}

func TestFunctionCallJudged(t *testing.T) {
	h := start(t, recordParams)
	ctx := context.Background()
	c := h.connect(t, "postgres")
	var termOID, md5OID uint32
	if err := c.QueryRow(ctx, "SELECT 'pg_terminate_backend(int4,int8)'::regprocedure::oid, 'md5(text)'::regprocedure::oid").Scan(&termOID, &md5OID); err != nil {
		t.Fatal(err)
	}
	var pid int32
	if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		t.Fatal(err)
	}
	pc := c.PgConn()
	call := func(oid uint32, args ...[]byte) (*pgproto3.FunctionCallResponse, *pgproto3.ErrorResponse) {
		t.Helper()
		hc, err := pc.Hijack()
		if err != nil {
			t.Fatal(err)
		}
		fe := hc.Frontend
		fe.Send(&pgproto3.FunctionCall{Function: oid, ArgFormatCodes: []uint16{0}, Arguments: args, ResultFormatCode: 0})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		var resp *pgproto3.FunctionCallResponse
		var er *pgproto3.ErrorResponse
		for {
			m, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			switch m := m.(type) {
			case *pgproto3.FunctionCallResponse:
				r := *m
				r.Result = append([]byte(nil), m.Result...)
				resp = &r
			case *pgproto3.ErrorResponse:
				e := *m
				er = &e
			case *pgproto3.ReadyForQuery:
				// Hand the connection back: a fresh pgconn would be simpler, but this keeps
				// the same session.
				pc, err = pgconn.Construct(hc)
				if err != nil {
					t.Fatal(err)
				}
				return resp, er
			}
		}
	}
	// A harmless function runs.
	resp, er := call(md5OID, []byte("abc"))
	if er != nil || resp == nil || string(resp.Result) != "900150983cd24fb0d6963f7d28e17f72" {
		t.Fatalf("md5 via FunctionCall: %v %v", resp, er)
	}
	if e := h.log.Find(t, "md5($1)"); !slices.Equal(e.Params, []string{"abc"}) || e.Rows != 0 || e.Error != "" {
		t.Errorf("FunctionCall event: %q params %q rows %d error %q", e.Statement, e.Params, e.Rows, e.Error)
	}
	// pg_terminate_backend via FunctionCall is refused like the SELECT would be.
	_, er = call(termOID, []byte(stringInt(pid)), []byte("0"))
	if er == nil || er.Code != "42501" {
		t.Fatalf("pg_terminate_backend via FunctionCall: %+v", er)
	}
	if rr := pc.ExecParams(ctx, "SELECT 1", nil, nil, nil, nil).Read(); rr.Err != nil {
		t.Fatalf("session after refused FunctionCall: %v", rr.Err)
	}
}

func stringInt(n int32) string { return strconv.Itoa(int(n)) }
