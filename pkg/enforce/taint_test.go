package enforce

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.yaml.in/yaml/v3"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/policy"
	"github.com/vigil-db/vigil/pkg/sqlparse"
)

// taintCorpus is testdata/evasion/taint.yaml.
type taintCorpus struct {
	Setup  string   `yaml:"setup"`
	Leak   []string `yaml:"leak"`
	Benign []string `yaml:"benign"`
}

// emailForms are fragments of the test schema's emails in every form a transformation
// leaves them: raw, reversed, local part, base64 and hex of the local part.
var emailForms = []string{
	"alice", "ecila", "lice@", "YWxpY2", "616c6963", "bob", "Ym9i", "626f62",
	"example.", "elpmaxe", "carol", "lorac",
}

func loadTaintCorpus(t *testing.T) taintCorpus {
	t.Helper()
	b, err := os.ReadFile("testdata/evasion/taint.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c taintCorpus
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("testdata/evasion/taint.yaml: %v", err)
	}
	return c
}

// runBoth runs sql as one simple-protocol Query and, statement by statement, over the
// extended protocol with binary results, returning every value of both, and the error.
func runBoth(ctx context.Context, pc *pgconn.PgConn, sql string) (simple, binary []string, err error) {
	res, err := pc.Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, nil, fmt.Errorf("simple: %w", err)
	}
	for _, r := range res {
		for _, row := range r.Rows {
			for _, v := range row {
				simple = append(simple, string(v))
			}
		}
	}
	for _, part := range sqlparse.SplitPostgres(sql) {
		rr := pc.ExecParams(ctx, part, nil, nil, nil, []int16{1}).Read()
		if rr.Err != nil {
			return nil, nil, fmt.Errorf("extended %q: %w", part, rr.Err)
		}
		for _, row := range rr.Rows {
			for _, v := range row {
				binary = append(binary, string(v))
			}
		}
	}
	return simple, binary, nil
}

// TestTaintEvasions: no form of a sensitive column's value reaches a masked principal
// through any expression, subquery, CTE, view, set operation, RETURNING, cursor, prepared
// statement or function, over the simple and the extended protocol and through psql; and
// the benign corpus returns what PostgreSQL returns.
func TestTaintEvasions(t *testing.T) {
	h := start(t)
	corpus := loadTaintCorpus(t)
	if out, err := h.pg.Psql("postgres", corpus.Setup); err != nil {
		t.Fatalf("setup: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pc := h.connect(t, "analyst").PgConn()
	check := func(what, q string, vals []string) {
		t.Helper()
		all := strings.Join(vals, "|")
		for _, f := range emailForms {
			if strings.Contains(all, f) {
				t.Errorf("%s %s: %q of an email reached the client: %s", what, q, f, all)
				return
			}
		}
	}
	for _, q := range corpus.Leak {
		simple, binary, err := runBoth(ctx, pc, q)
		if err != nil {
			t.Errorf("%s: %v", q, err)
			continue
		}
		if len(simple) == 0 {
			t.Errorf("%s: no rows", q)
		}
		check("simple", q, simple)
		check("binary", q, binary)
	}
	// psql, the everyday client, sends each as its own Query.
	var args []string
	for _, q := range corpus.Leak {
		args = append(args, "-c", q)
	}
	out, err := h.psql(t, "analyst", args...)
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	check("psql", "(leak corpus)", []string{out})

	direct, err := pgconn.Connect(ctx, fmt.Sprintf("postgres://analyst@%s/postgres?sslmode=disable", h.pg.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(context.Background())
	for _, q := range corpus.Benign {
		want, wantBin, err := runBoth(ctx, direct, q)
		if err != nil {
			t.Fatalf("%s without the proxy: %v", q, err)
		}
		got, gotBin, err := runBoth(ctx, pc, q)
		if err != nil {
			t.Errorf("%s through the proxy: %v", q, err)
			continue
		}
		if strings.Join(got, "|") != strings.Join(want, "|") || !bytes.Equal([]byte(strings.Join(gotBin, "|")), []byte(strings.Join(wantBin, "|"))) {
			t.Errorf("%s: through the proxy\n%q\nwithout\n%q", q, got, want)
		}
	}

	// The trail names the masked source column.
	e := h.log.Find(t, "SELECT reverse(email) FROM customers")
	if !strings.Contains(strings.Join(e.MaskedColumns, ","), "customers.email") {
		t.Errorf("reverse(email): masked columns %v, pii %v", e.MaskedColumns, e.PIIColumns)
	}
}

// TestTaintFailClosed: a result the analysis cannot follow (here: FETCH from a cursor a
// plpgsql function opened, which the proxy never saw declared) leaves with every column
// masked, and its event says why.
func TestTaintFailClosed(t *testing.T) {
	h := start(t)
	if out, err := h.pg.Psql("postgres", `CREATE FUNCTION opencur() RETURNS refcursor LANGUAGE plpgsql AS $$
DECLARE c refcursor := 'pc'; BEGIN OPEN c FOR SELECT id, split_part(email, '@', 1) FROM customers ORDER BY id; RETURN c; END$$`); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ctx := context.Background()
	pc := h.connect(t, "analyst").PgConn()
	res, err := pc.Exec(ctx, "BEGIN; SELECT opencur(); FETCH ALL FROM pc; COMMIT").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, r := range res {
		for _, row := range r.Rows {
			for _, v := range row {
				vals = append(vals, string(v))
			}
		}
	}
	if len(vals) != 5 {
		t.Fatalf("rows: %q", vals)
	}
	for _, v := range vals[1:] {
		if strings.Contains(v, "alice") || strings.Contains(v, "bob") || v == "1" || v == "2" {
			t.Errorf("an unanalysable result left unmasked: %q", vals)
			break
		}
	}
	e := h.log.Find(t, "FETCH ALL FROM pc")
	if !strings.Contains(e.Detail, "every column masked") || !strings.Contains(e.Detail, `cursor "pc"`) {
		t.Errorf("event detail %q", e.Detail)
	}
}

// TestTaintCleanFunctions: length and friends are masked unless the policy lets them pass
// (sensitive.clean_functions); count and IS NULL always pass.
func TestTaintCleanFunctions(t *testing.T) {
	pg := testpg.Start(t)
	if _, err := pg.Psql("postgres", schemaSQL); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const q = "SELECT length(email), count(*) OVER (), email IS NULL FROM customers ORDER BY id"
	for _, tc := range []struct {
		clean []string
		want  string
	}{
		{nil, "|2|f||2|f"},
		{[]string{"length"}, "17|2|f|15|2|f"},
	} {
		p := policy.Default()
		p.Sensitive.Columns = []policy.SensitiveColumns{{Tables: []string{"customers"}, Columns: []string{"email"}}}
		p.Sensitive.CleanFunctions = tc.clean
		e, err := policy.NewEngine(p)
		if err != nil {
			t.Fatal(err)
		}
		h := startWith(t, pg, e)
		simple, binary, err := runBoth(ctx, h.connect(t, "analyst").PgConn(), q)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(simple, "|"); got != tc.want || len(binary) != len(simple) {
			t.Errorf("clean %v: %q (binary %q), want %q", tc.clean, got, binary, tc.want)
		}
	}
}
