package enforce

import (
	"context"
	"encoding/binary"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/vigil-db/vigil/pkg/event"
)

// wantEvent is what a statement's event must say (fields the proxy and capture share).
type wantEvent struct {
	stmt     string
	rows     int64
	err      string // SQLSTATE
	params   []string
	app      string
	decision string // "" is allow
}

func recordParams(c *Config) { c.RecordParams = true }

// TestStatementEvents: every statement the proxy forwards leaves exactly one event with the
// fields capture records for it, wherever it fails (Parse, Bind, Execute, one statement of a
// multi-statement Query), with its parameters and the application_name of the moment.
// Statements the server skips after an error, until Sync or to the end of a Query string,
// never ran and leave none, as in capture's trail.
func TestStatementEvents(t *testing.T) {
	h := start(t, recordParams)
	ctx := context.Background()
	ts := time.Date(2026, 2, 3, 4, 5, 6, 0, time.UTC)
	for _, tc := range []struct {
		name string
		user string
		run  func(t *testing.T, c *pgx.Conn)
		want []wantEvent
	}{
		{"planning error at Bind", "postgres", func(t *testing.T, c *pgx.Conn) {
			var n int
			wantCode(t, c.QueryRow(ctx, "SELECT 1/0").Scan(&n), "22012")
		}, []wantEvent{{stmt: "SELECT 1/0", err: "22012"}}},
		{"execution error bound to zero", "postgres", func(t *testing.T, c *pgx.Conn) {
			var n int
			wantCode(t, c.QueryRow(ctx, "SELECT 1/$1::int", 0).Scan(&n), "22012")
		}, []wantEvent{{stmt: "SELECT 1/$1::int", err: "22012", params: []string{"0"}}}},
		{"error after some rows", "postgres", func(t *testing.T, c *pgx.Conn) {
			_, err := c.Exec(ctx, "SELECT 1; SELECT 10/(3-g) FROM generate_series(1, 5) g", pgx.QueryExecModeSimpleProtocol)
			wantCode(t, err, "22012")
		}, []wantEvent{{stmt: "SELECT 1", rows: 1}, {stmt: "SELECT 10/(3-g) FROM generate_series(1, 5) g", err: "22012"}}},
		{"bad parameter at Bind", "postgres", func(t *testing.T, c *pgx.Conn) {
			rr := c.PgConn().ExecParams(ctx, "SELECT $1::int + 1", [][]byte{[]byte("abc")}, nil, nil, nil).Read()
			wantCode(t, rr.Err, "22P02")
		}, []wantEvent{{stmt: "SELECT $1::int + 1", err: "22P02", params: []string{"abc"}}}},
		{"error at Parse", "postgres", func(t *testing.T, c *pgx.Conn) {
			rr := c.PgConn().ExecParams(ctx, "SELECT * FROM missing_table", nil, nil, nil, nil).Read()
			wantCode(t, rr.Err, "42P01")
		}, []wantEvent{{stmt: "SELECT * FROM missing_table", err: "42P01"}}},
		{"pipeline: the failure is recorded, the skipped statement is not", "postgres", func(t *testing.T, c *pgx.Conn) {
			b := &pgconn.Batch{}
			b.ExecParams("SELECT 1", nil, nil, nil, nil)
			b.ExecParams("SELECT 1/$1::int", [][]byte{[]byte("0")}, nil, nil, nil)
			b.ExecParams("SELECT 2", nil, nil, nil, nil)
			_, err := c.PgConn().ExecBatch(ctx, b).ReadAll()
			wantCode(t, err, "22012")
		}, []wantEvent{{stmt: "SELECT 1", rows: 1}, {stmt: "SELECT 1/$1::int", err: "22012", params: []string{"0"}}}},
		{"params of several types", "postgres", func(t *testing.T, c *pgx.Conn) {
			var s string
			if err := c.QueryRow(ctx, "SELECT concat($1::int, $2::text, $3::bool, $4::float8, $5::timestamptz, $6::int8)",
				42, "héllo", true, 0.1, ts, nil).Scan(&s); err != nil {
				t.Fatal(err)
			}
		}, []wantEvent{{stmt: "SELECT concat($1::int, $2::text, $3::bool, $4::float8, $5::timestamptz, $6::int8)", rows: 1,
			params: []string{"42", "héllo", "true", "0.1", "2026-02-03T04:05:06Z", "NULL"}}}},
		{"binary parameters of declared types", "postgres", func(t *testing.T, c *pgx.Conn) {
			// As pgjdbc sends them: the Parse declares the types, no Describe asks.
			rr := c.PgConn().ExecParams(ctx, "SELECT $1 + 1, $2", [][]byte{{0, 0, 0, 0, 0, 0, 0, 41}, []byte("x")},
				[]uint32{20, 25}, []int16{1, 0}, nil).Read()
			if rr.Err != nil {
				t.Fatal(rr.Err)
			}
		}, []wantEvent{{stmt: "SELECT $1 + 1, $2", rows: 1, params: []string{"41", "x"}}}},
		{"multi-statement Query: one event each", "postgres", func(t *testing.T, c *pgx.Conn) {
			if _, err := c.Exec(ctx, "SELECT 1; SELECT generate_series(1, 3);\n UPDATE accounts SET balance = balance WHERE id < 5", pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatal(err)
			}
		}, []wantEvent{{stmt: "SELECT 1", rows: 1}, {stmt: "SELECT generate_series(1, 3)", rows: 3},
			{stmt: "UPDATE accounts SET balance = balance WHERE id < 5", rows: 4}}},
		{"multi-statement Query: the failing one, none after it", "postgres", func(t *testing.T, c *pgx.Conn) {
			_, err := c.Exec(ctx, "SELECT 1; SELECT 1/0; SELECT 2", pgx.QueryExecModeSimpleProtocol)
			wantCode(t, err, "22012")
		}, []wantEvent{{stmt: "SELECT 1", rows: 1}, {stmt: "SELECT 1/0", err: "22012"}}},
		{"multi-statement Query: refused whole, recorded as the refused statement", "postgres", func(t *testing.T, c *pgx.Conn) {
			_, err := c.Exec(ctx, "SELECT 1; SELEC 2", pgx.QueryExecModeSimpleProtocol)
			wantCode(t, err, "42501")
		}, []wantEvent{{stmt: "SELEC 2", err: "42501", decision: event.DecisionBlock}}},
		{"multi-statement Query: each judged on its own", "analyst", func(t *testing.T, c *pgx.Conn) {
			_, err := c.Exec(ctx, "SELECT 1; DELETE FROM accounts", pgx.QueryExecModeSimpleProtocol)
			wantCode(t, err, "42501")
		}, []wantEvent{{stmt: "DELETE FROM accounts", err: "42501", decision: event.DecisionBlock}}},
		{"refused in the extended protocol", "analyst", func(t *testing.T, c *pgx.Conn) {
			rr := c.PgConn().ExecParams(ctx, "DROP TABLE accounts", nil, nil, nil, nil).Read()
			wantCode(t, rr.Err, "42501")
		}, []wantEvent{{stmt: "DROP TABLE accounts", err: "42501", decision: event.DecisionBlock}}},
		{"application_name set after startup", "postgres", func(t *testing.T, c *pgx.Conn) {
			for _, sql := range []string{"SET application_name = 'first'", "SELECT 1", "SELECT set_config('application_name', 'second', false)", "SELECT 2"} {
				if _, err := c.Exec(ctx, sql); err != nil {
					t.Fatal(err)
				}
			}
		}, []wantEvent{{stmt: "SET application_name = 'first'"}, {stmt: "SELECT 1", rows: 1, app: "first"},
			// The server reports the change just before ReadyForQuery: the statement
			// that makes it still ran under the old name.
			{stmt: "SELECT set_config('application_name', 'second', false)", rows: 1, app: "first"},
			{stmt: "SELECT 2", rows: 1, app: "second"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.connect(t, tc.user)
			h.log.Reset()
			tc.run(t, c)
			// Each event is emitted before the response that completes its statement is
			// passed on: the client has had them all.
			checkEvents(t, h.log.Events(), tc.want)
		})
	}
}

// TestRecordParamsOff: with audit.record_params off, no event carries parameters.
func TestRecordParamsOff(t *testing.T) {
	h := start(t)
	c := h.connect(t, "postgres")
	var n int
	if err := c.QueryRow(context.Background(), "SELECT $1::int", 7).Scan(&n); err != nil {
		t.Fatal(err)
	}
	e := h.log.Find(t, "SELECT $1::int")
	if e.Params != nil {
		t.Fatalf("params recorded with RecordParams off: %q", e.Params)
	}
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := pgCode(err); got != code {
		t.Fatalf("error %v (SQLSTATE %q), want SQLSTATE %s", err, got, code)
	}
}

func checkEvents(t *testing.T, got []*event.Event, want []wantEvent) {
	t.Helper()
	var lines []string
	for _, e := range got {
		lines = append(lines, e.Statement)
	}
	if len(got) != len(want) {
		t.Fatalf("%d events, want %d: %q", len(got), len(want), lines)
	}
	for i, w := range want {
		e := got[i]
		if w.decision == "" {
			w.decision = event.DecisionAllow
		}
		if e.Statement != w.stmt || e.Rows != w.rows || e.Error != w.err || !slices.Equal(e.Params, w.params) ||
			e.Application != w.app || e.Decision != w.decision || e.Source != event.SourceProxy || e.Kind == "" {
			t.Errorf("event %d: statement %q rows %d error %q params %q application %q decision %q kind %q; want %+v",
				i, e.Statement, e.Rows, e.Error, e.Params, e.Application, e.Decision, e.Kind, w)
		}
		if w.err != "" && strings.TrimSpace(e.ErrorMessage) == "" {
			t.Errorf("event %d: error %s without its message", i, e.Error)
		}
	}
}

// TestSessionEndsMidStatement: when the upstream session dies before answering (its
// backend killed), every statement still waiting is recorded as having no answer, with the
// detail that says its outcome is unknown, and counted; a Query's statements each get theirs,
// and an Execute the parameters of its Bind, which the server had not answered yet.
func TestSessionEndsMidStatement(t *testing.T) {
	const unknown = "outcome unknown: the session ended before the server answered"
	for _, tc := range []struct {
		name string
		run  func(ctx context.Context, c *pgx.Conn) error
		want []wantEvent
	}{
		{"multi-statement Query", func(ctx context.Context, c *pgx.Conn) error {
			_, err := c.Exec(ctx, "SELECT 1; SELECT pg_sleep(30); SELECT 2", pgx.QueryExecModeSimpleProtocol)
			return err
			// The server flushes a Query's responses only at its end: SELECT 1's never
			// left it, so for all the proxy can know it did not run either.
		}, []wantEvent{{stmt: "SELECT 1", err: "08006"}, {stmt: "SELECT pg_sleep(30)", err: "08006"}, {stmt: "SELECT 2", err: "08006"}}},
		{"extended protocol", func(ctx context.Context, c *pgx.Conn) error {
			return c.QueryRow(ctx, "SELECT pg_sleep($1)", 30).Scan(new(any))
		}, []wantEvent{{stmt: "SELECT pg_sleep($1)", err: "08006", params: []string{"30"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, recordParams)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c := h.connect(t, "postgres")
			h.log.Reset()
			done := make(chan error, 1)
			go func() { done <- tc.run(ctx, c) }()
			pid := ""
			for pid == "" && ctx.Err() == nil {
				out, err := h.pg.Psql("postgres", "SELECT pid FROM pg_stat_activity WHERE query LIKE '%pg_sleep%' AND state = 'active' AND pid <> pg_backend_pid()")
				if err != nil {
					t.Fatal(err)
				}
				pid = out
				time.Sleep(20 * time.Millisecond)
			}
			n, err := strconv.Atoi(pid)
			if err != nil {
				t.Fatalf("backend pid %q: %v", pid, err)
			}
			if err := syscall.Kill(n, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err == nil {
				t.Fatal("the statement succeeded though its backend was killed")
			}
			for i := 0; i < 100 && len(h.log.Events()) < len(tc.want); i++ {
				time.Sleep(10 * time.Millisecond)
			}
			got := h.log.Events()
			checkEvents(t, got, tc.want)
			for i, e := range got {
				if want := tc.want[i]; want.err == "08006" && e.Detail != unknown {
					t.Errorf("event %d (%q): detail %q, want %q", i, e.Statement, e.Detail, unknown)
				}
			}
			unanswered := 0
			for _, w := range tc.want {
				if w.err == "08006" {
					unanswered++
				}
			}
			if v := metricValue(t, h, "vigil_proxy_statements_unanswered_total", ""); v != float64(unanswered) {
				t.Errorf("vigil_proxy_statements_unanswered_total = %v, want %d", v, unanswered)
			}
		})
	}
}

// TestMalformedBindRecorded: a Bind the server rejects as malformed is recorded once, as
// the Execute it was for, with its error and why it has no parameters; the session goes on.
func TestMalformedBindRecorded(t *testing.T) {
	h := start(t, recordParams)
	ctx := context.Background()
	c := h.connect(t, "postgres")
	hc, err := c.PgConn().Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Conn.Close()
	h.log.Reset()
	fe := hc.Frontend
	fe.Send(&pgproto3.Parse{Query: "SELECT $1::text"})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	// One parameter whose length says 100 bytes, followed by 2.
	bind := []byte{'B', 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 100, 'h', 'i'}
	binary.BigEndian.PutUint32(bind[1:], uint32(len(bind)-1))
	if _, err := hc.Conn.Write(bind); err != nil {
		t.Fatal(err)
	}
	fe.Send(&pgproto3.Execute{})
	fe.Send(&pgproto3.Sync{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	if code := untilReady(t, fe); code != "08P01" {
		t.Fatalf("malformed Bind answered with %q, want 08P01", code)
	}
	checkEvents(t, h.log.Events(), []wantEvent{{stmt: "SELECT $1::text", err: "08P01"}})
	if e := h.log.Events()[0]; e.Detail != "parameters not recorded: malformed Bind" {
		t.Errorf("detail %q", e.Detail)
	}
	pc, err := pgconn.Construct(hc)
	if err != nil {
		t.Fatal(err)
	}
	if rr := pc.ExecParams(ctx, "SELECT 1", nil, nil, nil, nil).Read(); rr.Err != nil {
		t.Fatalf("session after the malformed Bind: %v", rr.Err)
	}
}

// TestPortalSuspendedRecorded: an Execute cut short by its row limit is recorded with the
// rows it returned and says so, as capture does.
func TestPortalSuspendedRecorded(t *testing.T) {
	h := start(t, recordParams)
	c := h.connect(t, "postgres")
	hc, err := c.PgConn().Hijack()
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Conn.Close()
	h.log.Reset()
	fe := hc.Frontend
	fe.Send(&pgproto3.Parse{Query: "SELECT generate_series(1, $1::int)"})
	fe.Send(&pgproto3.Bind{Parameters: [][]byte{[]byte("5")}})
	fe.Send(&pgproto3.Execute{MaxRows: 2})
	fe.Send(&pgproto3.Sync{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	if code := untilReady(t, fe); code != "" {
		t.Fatalf("error %s", code)
	}
	checkEvents(t, h.log.Events(), []wantEvent{{stmt: "SELECT generate_series(1, $1::int)", rows: 2, params: []string{"5"}}})
	if e := h.log.Events()[0]; e.Detail != "row limit reached: portal suspended" {
		t.Errorf("detail %q", e.Detail)
	}
}

// untilReady reads responses up to ReadyForQuery and returns the SQLSTATE of the error
// among them, if any.
func untilReady(t *testing.T, fe *pgproto3.Frontend) string {
	t.Helper()
	var code string
	for {
		m, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			code = m.Code
		case *pgproto3.ReadyForQuery:
			return code
		}
	}
}
