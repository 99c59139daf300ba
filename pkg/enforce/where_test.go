package enforce

import (
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/approval"
	"github.com/vigil-db/vigil/pkg/policy"
)

// whereCase is one statement of pkg/sqlparse's effective-WHERE corpora.
type whereCase struct {
	SQL  string `yaml:"sql"`
	Args []any  `yaml:"args"`
}

func loadWhereCases(t *testing.T, name string) []whereCase {
	t.Helper()
	b, err := os.ReadFile("../sqlparse/testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var cs []whereCase
	if err := yaml.Unmarshal(b, &cs); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return cs
}

// victimState is a digest of every row of the corpus's target table.
func victimState(t *testing.T, pg *testpg.Server) string {
	t.Helper()
	out, err := pg.Psql("postgres", "SELECT count(*) || ':' || md5(string_agg(v::text, ',' ORDER BY id)) FROM victim v")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// whereHarness is a proxy under the shipped default policy in front of a PostgreSQL that
// holds the effective-WHERE corpora's schema.
func whereHarness(t *testing.T) (*harness, *testpg.Server) {
	t.Helper()
	schema, err := os.ReadFile("../sqlparse/testdata/where_schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	pg := testpg.Start(t)
	if _, err := pg.Psql("postgres", string(schema)); err != nil {
		t.Fatal(err)
	}
	eng, err := policy.NewEngine(policy.Default())
	if err != nil {
		t.Fatal(err)
	}
	return startWith(t, pg, eng), pg
}

// TestEffectiveWhereThroughProxy drives the effective-WHERE corpora through the proxy with
// the shipped default policy: every evasion is refused, with psql (simple protocol) and
// with pgx (extended protocol, its parameters bound), and the target's rows stay as they
// were; every ordinary statement runs.
func TestEffectiveWhereThroughProxy(t *testing.T) {
	h, pg := whereHarness(t)
	before := victimState(t, pg)
	evasions, benign := loadWhereCases(t, "where_evasions.yaml"), loadWhereCases(t, "where_benign.yaml")

	c := h.connect(t, "postgres")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	modes := []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol}
	for _, tc := range evasions {
		for _, mode := range modes {
			_, err := c.Exec(ctx, tc.SQL, append([]any{mode}, tc.Args...)...)
			if pgCode(err) != "42501" || !strings.Contains(err.Error(), `"no-effective-where"`) {
				t.Errorf("not refused (mode %v): %q %v: %v", mode, tc.SQL, tc.Args, err)
			}
			var one int
			if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
				t.Fatalf("session unusable after %q (mode %v): %v", tc.SQL, mode, err)
			}
		}
	}
	// psql: the statements without parameters, one script (each its own Query).
	var script strings.Builder
	n := 0
	for _, tc := range evasions {
		if tc.Args == nil {
			script.WriteString(tc.SQL + ";\n")
			n++
		}
	}
	out, _ := h.psql(t, "postgres", "-f", writeTemp(t, script.String()))
	if got := strings.Count(out, `refused by policy rule "no-effective-where"`); got != n {
		t.Errorf("psql: %d of %d refused:\n%s", got, n, out)
	}
	if after := victimState(t, pg); after != before {
		t.Fatalf("victim changed through the proxy: %s, was %s", after, before)
	}

	for _, tc := range benign {
		for _, mode := range modes {
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			rows, err := tx.Query(ctx, tc.SQL, append([]any{mode}, tc.Args...)...)
			if err == nil {
				for rows.Next() {
				}
				rows.Close()
				err = rows.Err()
			}
			if err != nil {
				t.Errorf("ordinary statement refused (mode %v): %q %v: %v", mode, tc.SQL, tc.Args, err)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if after := victimState(t, pg); after != before {
		t.Fatalf("victim changed after rolled-back ordinary statements: %s, was %s", after, before)
	}
}

// TestBindJudgedWithValues binds one prepared statement whose effect depends on its
// parameter: bound to NULL it would delete every row and is refused at the Bind, in a
// transaction too, and the same prepared statement bound to a value runs.
func TestBindJudgedWithValues(t *testing.T) {
	h, pg := whereHarness(t)
	c := h.connect(t, "postgres")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const del = "DELETE FROM victim WHERE id = coalesce($1, id)"
	if _, err := c.Prepare(ctx, "del", del); err != nil {
		t.Fatalf("Parse refused: %v", err)
	}
	if _, err := c.Exec(ctx, "del", nil); pgCode(err) != "42501" {
		t.Fatalf("bound to NULL: %v", err)
	}
	tag, err := c.Exec(ctx, "del", 3)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("bound to 3: %v %v", tag, err)
	}
	// In a transaction the refused Bind fails it, as a failed statement does.
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "del", nil); pgCode(err) != "42501" {
		t.Fatalf("bound to NULL in a transaction: %v", err)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); pgCode(err) != "25P02" {
		t.Fatalf("after the refusal the transaction should be aborted: %v", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// A text-format NULL and a text-format pattern, as libpq sends them.
	res := c.PgConn().ExecParams(ctx, "DELETE FROM victim WHERE name LIKE $1", [][]byte{[]byte("%")}, nil, []int16{0}, nil).Read()
	if pgCode(res.Err) != "42501" {
		t.Fatalf("LIKE bound to %%: %v", res.Err)
	}
	res = c.PgConn().ExecParams(ctx, "DELETE FROM victim WHERE name LIKE $1", [][]byte{[]byte("cd1%")}, nil, []int16{0}, nil).Read()
	if res.Err != nil || res.CommandTag.RowsAffected() != 1 {
		t.Fatalf("LIKE bound to cd1%%: %v %v", res.CommandTag, res.Err)
	}
	if out, _ := pg.Psql("postgres", "SELECT count(*) FROM victim"); out != "8" {
		t.Fatalf("victim has %s rows, want 8", out)
	}
	e := h.log.Find(t, del)
	if e.Rule != "no-effective-where" {
		t.Fatalf("event of the refused Bind: %+v", e)
	}
}

func writeTemp(t *testing.T, s string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// TestTriggerEscapesRefused: turning a table's triggers or rules off, or changing which
// sessions they fire in, is an audit escape like session_replication_role, refused by the
// default policy's identity-escape rule; the trigger stays as it was.
func TestTriggerEscapesRefused(t *testing.T) {
	pg := testpg.Start(t)
	if _, err := pg.Psql("postgres", `CREATE TABLE audited (id int PRIMARY KEY);
		CREATE TABLE audit_log (id int);
		CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN INSERT INTO audit_log VALUES (NEW.id); RETURN NEW; END';
		CREATE TRIGGER audit_t AFTER INSERT ON audited FOR EACH ROW EXECUTE FUNCTION audit();
		CREATE RULE keep AS ON DELETE TO audited DO INSTEAD NOTHING`); err != nil {
		t.Fatal(err)
	}
	eng, err := policy.NewEngine(policy.Default())
	if err != nil {
		t.Fatal(err)
	}
	h := startWith(t, pg, eng)
	c := h.connect(t, "postgres")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	escapes := []string{
		"ALTER TABLE audited DISABLE TRIGGER audit_t",
		"ALTER TABLE audited DISABLE TRIGGER ALL",
		"ALTER TABLE audited DISABLE TRIGGER USER",
		"ALTER TABLE IF EXISTS ONLY public.audited DISABLE TRIGGER audit_t",
		"ALTER TABLE audited ENABLE REPLICA TRIGGER audit_t",
		"ALTER TABLE audited ENABLE ALWAYS TRIGGER audit_t",
		"ALTER TABLE audited DISABLE RULE keep",
		"ALTER TABLE audited ENABLE REPLICA RULE keep",
		"ALTER TABLE audited ENABLE ALWAYS RULE keep",
		"ALTER TABLE audited ADD COLUMN note text, DISABLE TRIGGER audit_t",
	}
	for _, sql := range escapes {
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
			_, err := c.Exec(ctx, sql, mode)
			if pgCode(err) != "42501" || !strings.Contains(err.Error(), `"identity-escape"`) {
				t.Errorf("not refused (mode %v): %q: %v", mode, sql, err)
			}
		}
	}
	out, _ := h.psql(t, "postgres", "-c", "ALTER TABLE audited DISABLE TRIGGER ALL")
	if !strings.Contains(out, `refused by policy rule "identity-escape"`) {
		t.Errorf("psql: %s", out)
	}
	state, err := pg.Psql("postgres", "SELECT string_agg(tgname::text || tgenabled::text, ',' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'audited'::regclass AND NOT tgisinternal")
	if err != nil || state != "audit_tO" {
		t.Fatalf("trigger state %q (%v), want audit_tO", state, err)
	}
	if state, _ := pg.Psql("postgres", "SELECT ev_enabled FROM pg_rewrite WHERE rulename = 'keep'"); state != "O" {
		t.Fatalf("rule state %q, want O", state)
	}
	// Enabling a trigger again is no escape.
	if _, err := c.Exec(ctx, "ALTER TABLE audited ENABLE TRIGGER audit_t"); err != nil {
		t.Fatalf("ENABLE TRIGGER: %v", err)
	}
}

// TestBindJudgedForApproval: when the policy sends statements that touch every row to an
// approval, a prepared statement whose effect depends on its parameter needs one only for
// the Binds that would touch every row.
func TestBindJudgedForApproval(t *testing.T) {
	pg := testpg.Start(t)
	if _, err := pg.Psql("postgres", schemaSQL); err != nil {
		t.Fatal(err)
	}
	p := policy.Default()
	for i, r := range p.Rules {
		if r.Name == "no-effective-where" {
			p.Rules[i].Action = policy.ActionRequireApproval
		}
	}
	engine, err := policy.NewEngine(p)
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	var store *approval.Store
	h := startWith(t, pg, engine, recordParams, func(c *Config) {
		store, err = approval.Open(approval.Options{Dir: t.TempDir(), Key: key, Sink: discardSink{},
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		c.Approvals = store
	})
	c := h.connect(t, "analyst")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const upd = "UPDATE accounts SET balance = 0 WHERE id = coalesce($1, id)"
	if tag, err := c.Exec(ctx, upd, 3); err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("bound to 3: %v %v", tag, err)
	}
	if len(store.List()) != 0 {
		t.Fatalf("an approval was asked for a Bind that restricts: %+v", store.List())
	}
	_, err = c.Exec(ctx, upd, nil)
	if pgCode(err) != "42501" || !strings.Contains(err.Error(), "needs an approval") {
		t.Fatalf("bound to NULL: %v", err)
	}
	if r := pendingRequest(t, store, upd, "NULL"); r.Rule != "no-effective-where" {
		t.Fatalf("request %+v", r)
	}
	if out, _ := pg.Psql("postgres", "SELECT count(*) FROM accounts WHERE balance = 100"); out != "9" {
		t.Fatalf("accounts at 100: %s, want 9", out)
	}
}
