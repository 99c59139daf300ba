package postgres

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/event"
)

var update = flag.Bool("update", false, "rewrite testdata/recordings from live traffic")

// typedSQL takes parameters pgx sends in binary, of types the decoder renders; pgTime is
// the instant of tstzBytes, sent from another time zone.
const typedSQL = "SELECT $1::timestamptz, $2::uuid, $3::text, $4::bytea"

var pgTime = time.Date(2026, 11, 25, 12, 0, 0, 123456000, time.FixedZone("CET", 3600))

// TestRecorded drives real clients (psql, pgx, pgbench) against a real PostgreSQL 15
// through the recording relay, then decodes the recording and checks the events.
func TestRecorded(t *testing.T) {
	srv := testpg.Start(t)
	mustPsql(t, srv, "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5) g")
	cmd := exec.Command("pgbench", "-i", "-I", "dtgp", "-s", "1", "-q", "-h", srv.SocketDir, "-p", strconv.Itoa(srv.Port), "-U", "postgres", "postgres")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v: %s", err, out)
	}
	cfg := Config{RecordParams: true}

	// Each scenario runs its clients through a fresh relay and checks the events of every
	// connection it opened, concatenated in connection order.
	scenarios := []struct {
		name  string
		run   func(t *testing.T, port int)
		check func(t *testing.T, evs []*event.Event)
	}{
		{"psql", func(t *testing.T, port int) {
			psql(t, port, "", "SELECT 1; SELECT 2")
			psql(t, port, "", "SELECT 1/0")
			psql(t, port, "", "SELECT 1; SELEC 2")
			psql(t, port, "", "BEGIN; SELECT 1/0; SELECT 3")
			psql(t, port, "20\ttwenty\n21\ttwenty-one\n", "COPY items FROM STDIN")
			psql(t, port, "", "COPY (SELECT * FROM items ORDER BY id) TO STDOUT")
		}, func(t *testing.T, evs []*event.Event) {
			expect(t, evs, []want{
				{Statement: "SELECT 1", Rows: 1}, {Statement: "SELECT 2", Rows: 1},
				{Statement: "SELECT 1/0", Error: "22012"},
				{Statement: "SELEC 2", Error: "42601"},
				{Statement: "BEGIN"}, {Statement: "SELECT 1/0", Error: "22012"},
				{Statement: "COPY items FROM STDIN", Rows: 2},
				{Statement: "COPY (SELECT * FROM items ORDER BY id) TO STDOUT", Rows: 7},
			})
			for _, e := range evs {
				if e.DBUser != "postgres" || e.Database != "postgres" || e.Application != "psql" || e.BackendPID == 0 {
					t.Errorf("identity of %q: user %q db %q app %q pid %d", e.Statement, e.DBUser, e.Database, e.Application, e.BackendPID)
				}
			}
		}},
		{"pgx", func(t *testing.T, port int) {
			ctx := context.Background()
			dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
			for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeDescribeExec} {
				cc, err := pgx.ParseConfig(dsn)
				if err != nil {
					t.Fatal(err)
				}
				cc.DefaultQueryExecMode = mode
				conn, err := pgx.ConnectConfig(ctx, cc)
				if err != nil {
					t.Fatal(err)
				}
				for i := 1; i <= 3; i++ {
					var name string
					if err := conn.QueryRow(ctx, "SELECT name FROM items WHERE id = $1", i).Scan(&name); err != nil {
						t.Fatal(err)
					}
				}
				conn.Close(ctx)
			}
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Prepare(ctx, "byname", "SELECT id FROM items WHERE name = $1"); err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				if _, err := conn.Exec(ctx, "byname", fmt.Sprintf("item %d", i)); err != nil {
					t.Fatal(err)
				}
			}
			// pgx sends these binary: the types come from the server's ParameterDescription.
			if _, err := conn.Exec(ctx, typedSQL, pgTime, pgtype.UUID{Bytes: [16]byte(uuidBytes), Valid: true}, nil, []byte{0xde, 0xad}); err != nil {
				t.Fatal(err)
			}
			b := &pgx.Batch{}
			b.Queue("INSERT INTO items VALUES ($1, $2)", 100, "hundred")
			b.Queue("UPDATE items SET name = $1 WHERE id = $2", "cent", 100)
			b.Queue("DELETE FROM items WHERE id = $1", 100)
			if err := conn.SendBatch(ctx, b).Close(); err != nil {
				t.Fatal(err)
			}
			b = &pgx.Batch{}
			b.Queue("INSERT INTO items VALUES ($1, $2)", 200, "a")
			b.Queue("INSERT INTO items VALUES ($1, $2)", 200, "dup")
			b.Queue("DELETE FROM items WHERE id = $1", 200)
			if err := conn.SendBatch(ctx, b).Close(); err == nil {
				t.Fatal("batch with a duplicate key succeeded")
			}
		}, func(t *testing.T, evs []*event.Event) {
			sel := "SELECT name FROM items WHERE id = $1"
			byName := "SELECT id FROM items WHERE name = $1"
			w := []want{
				{Statement: sel, Params: []string{"1"}, Rows: 1}, {Statement: sel, Params: []string{"2"}, Rows: 1},
				{Statement: sel, Params: []string{"3"}, Rows: 1},
				{Statement: sel, Params: []string{"1"}, Rows: 1}, {Statement: sel, Params: []string{"2"}, Rows: 1},
				{Statement: sel, Params: []string{"3"}, Rows: 1},
			}
			for i := range 5 {
				rows := int64(1)
				if i == 0 {
					rows = 0
				}
				w = append(w, want{Statement: byName, Params: []string{fmt.Sprintf("item %d", i)}, Rows: rows})
			}
			w = append(w,
				want{Statement: typedSQL, Params: []string{"2026-11-25T11:00:00.123456Z", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "NULL", `\xdead`}, Rows: 1},
				want{Statement: "INSERT INTO items VALUES ($1, $2)", Params: []string{"100", "hundred"}, Rows: 1},
				want{Statement: "UPDATE items SET name = $1 WHERE id = $2", Params: []string{"cent", "100"}, Rows: 1},
				want{Statement: "DELETE FROM items WHERE id = $1", Params: []string{"100"}, Rows: 1},
				want{Statement: "INSERT INTO items VALUES ($1, $2)", Params: []string{"200", "a"}, Rows: 1},
				want{Statement: "INSERT INTO items VALUES ($1, $2)", Params: []string{"200", "dup"}, Error: "23505"},
			)
			expect(t, evs, w)
		}},
		{"pgbench", func(t *testing.T, port int) {
			for _, mode := range []string{"simple", "extended", "prepared"} {
				pgbench(t, port, "-S", "-M", mode, "-t", "3")
			}
			pgbench(t, port, "-M", "prepared", "-t", "2")
		}, func(t *testing.T, evs []*event.Event) {
			// pgbench first asks the scale and partitioning on a connection of its own;
			// keep the benchmark's statements.
			var bench []*event.Event
			for _, e := range evs {
				if !strings.Contains(e.Statement, "pg_catalog") && !strings.Contains(e.Statement, "count(*)") {
					bench = append(bench, e)
				}
			}
			lit := regexp.MustCompile(`^SELECT abalance FROM pgbench_accounts WHERE aid = [0-9]+$`)
			var i int
			next := func() *event.Event {
				if i >= len(bench) {
					t.Fatalf("only %d benchmark events", len(bench))
				}
				i++
				return bench[i-1]
			}
			for range 3 {
				e := next()
				if !lit.MatchString(e.Statement) || e.Rows != 1 || e.Params != nil || e.Error != "" {
					t.Errorf("-M simple: %+v", got([]*event.Event{e}))
				}
			}
			for range 6 { // extended, then prepared
				e := next()
				if e.Statement != "SELECT abalance FROM pgbench_accounts WHERE aid = $1;" || e.Rows != 1 || len(e.Params) != 1 || e.Error != "" {
					t.Errorf("-M extended/prepared: %+v", got([]*event.Event{e}))
				}
				if _, err := strconv.Atoi(e.Params[0]); err != nil {
					t.Errorf("param %q is not the account id", e.Params[0])
				}
			}
			tpcb := []string{"BEGIN;", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
				"SELECT abalance FROM pgbench_accounts WHERE aid = $1;", "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2;",
				"UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2;",
				"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);", "END;"}
			for range 2 {
				for _, st := range tpcb {
					e := next()
					if e.Statement != st || e.Rows != map[bool]int64{true: 0, false: 1}[st == "BEGIN;" || st == "END;"] || e.Error != "" {
						t.Errorf("tpcb-like: got %+v, want %q", got([]*event.Event{e}), st)
					}
				}
			}
			if i != len(bench) {
				t.Errorf("%d unexpected events after the benchmark's: %+v", len(bench)-i, got(bench[i:]))
			}
		}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			r := startRelay(t, srv.Addr())
			sc.run(t, r.port())
			rec := r.recording()
			if *update {
				if err := writeRecording(filepath.Join("testdata", "recordings", sc.name+".rec"), rec); err != nil {
					t.Fatal(err)
				}
			}
			byConn, st := decodeRecording(cfg, rec)
			var evs []*event.Event
			for id := range len(byConn) + 64 {
				evs = append(evs, byConn[id]...)
			}
			for _, e := range evs {
				if e.DurationUS <= 0 || e.Time.IsZero() || e.Detail != "" {
					t.Errorf("event %q: duration %d µs, time %v, detail %q", e.Statement, e.DurationUS, e.Time, e.Detail)
				}
			}
			if st.DecodeErrors != 0 || st.Resyncs != 0 || st.UnmatchedResponses != 0 || st.SkippedBytes != 0 || st.ResponsesNotSeen != 0 {
				t.Errorf("clean traffic decoded with trouble: %+v", st)
			}
			sc.check(t, evs)
		})
	}
}

func expect(t *testing.T, evs []*event.Event, w []want) {
	t.Helper()
	g := got(evs)
	for i := range max(len(g), len(w)) {
		switch {
		case i >= len(g):
			t.Errorf("event %d missing: want %+v", i, w[i])
		case i >= len(w):
			t.Errorf("event %d unexpected: %+v", i, g[i])
		case fmt.Sprint(g[i]) != fmt.Sprint(w[i]):
			t.Errorf("event %d:\n got  %+v\n want %+v", i, g[i], w[i])
		}
	}
}

func mustPsql(t *testing.T, srv *testpg.Server, sql string) {
	t.Helper()
	if out, err := srv.Psql("postgres", sql); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}

// psql runs one psql -c through the relay; errors from SQL are expected and ignored.
func psql(t *testing.T, port int, stdin, sql string) {
	t.Helper()
	cmd := exec.Command("psql", "-X", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres", "-d", "postgres", "-c", sql)
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
	cmd.Stdin = strings.NewReader(stdin)
	done := make(chan struct{})
	time.AfterFunc(30*time.Second, func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
		}
	})
	cmd.CombinedOutput()
	close(done)
}

func pgbench(t *testing.T, port int, args ...string) {
	t.Helper()
	a := append([]string{"-n", "-c", "1", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "postgres"}, args...)
	cmd := exec.Command("pgbench", append(a, "postgres")...)
	cmd.Env = append(os.Environ(), "PGSSLMODE=disable")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pgbench %v: %v: %s", args, err, out)
	}
}
