package lineage

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// memCatalog is a table-driven catalog: relations by name (public unless qualified) and
// user functions; any other function name is a pg_catalog builtin.
type memCatalog struct {
	rels  map[string]Relation
	funcs map[string][]Function
	fail  bool
}

func (m *memCatalog) Relations(schema, name string) ([]Relation, error) {
	if m.fail {
		return nil, errors.New("catalog down")
	}
	var out []Relation
	for _, r := range m.rels {
		if r.Name == name && (schema == "" || schema == r.Schema) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b Relation) int { return strings.Compare(a.Schema, b.Schema) })
	return out, nil
}

func (m *memCatalog) Functions(schema, name string) ([]Function, error) {
	if f, ok := m.funcs[name]; ok && (schema == "" || schema == f[0].Schema) {
		return f, nil
	}
	if name == "no_such_function" {
		return nil, nil
	}
	return []Function{{Schema: "pg_catalog", Language: "internal"}}, nil
}

func testCatalog() *memCatalog {
	return &memCatalog{
		rels: map[string]Relation{
			"public.customers":   {Schema: "public", Name: "customers", Columns: []string{"id", "email", "full_name", "created_at"}},
			"public.orders":      {Schema: "public", Name: "orders", Columns: []string{"id", "customer_id", "total"}},
			"hr.staff":           {Schema: "hr", Name: "staff", Columns: []string{"id", "ssn"}},
			"public.v_customers": {Schema: "public", Name: "v_customers", Columns: []string{"id", "mail"}, View: "SELECT id, lower(email) AS mail FROM customers"},
			"public.v_plain":     {Schema: "public", Name: "v_plain", Columns: []string{"id", "email"}, View: "SELECT id, email FROM customers"},
			"public.v_loop":      {Schema: "public", Name: "v_loop", Columns: []string{"x"}, View: "SELECT x FROM v_loop"},
			// The same name in two schemas: which one a session reads depends on its
			// search_path, so both count.
			"public.accounts": {Schema: "public", Name: "accounts", Columns: []string{"id", "balance"}},
			"evil.accounts":   {Schema: "evil", Name: "accounts", Columns: []string{"balance"}, View: "SELECT reverse(email) AS balance FROM customers"},
			"pg_temp_3.stash": {Schema: "pg_temp_3", Name: "stash", Columns: []string{"id"}},
		},
		funcs: map[string][]Function{
			"get_email": {{Schema: "public", Language: "sql", Body: "SELECT email FROM customers WHERE id = $1"}},
			"echo":      {{Schema: "public", Language: "sql", Body: "SELECT upper(x)", ArgNames: []string{"x"}}},
			"n_with":    {{Schema: "public", Language: "sql", Body: "SELECT count(*) FROM customers WHERE email LIKE $1"}},
			"plf":       {{Schema: "public", Language: "plpgsql", Body: "BEGIN RETURN 1; END"}},
		},
	}
}

// render writes a result as one token per column: "" clean, =src direct, ~src,src
// transformed, ? opaque; or "FAIL".
func render(r *Result) string {
	if r.Failed != "" {
		return "FAIL"
	}
	var out []string
	for _, c := range r.Columns {
		var srcs []string
		for _, s := range c.Sources {
			srcs = append(srcs, s.String())
		}
		tok := strings.Join(srcs, ",")
		switch {
		case c.Opaque != "":
			tok = "?" + tok
		case c.Direct:
			tok = "=" + tok
		case tok != "":
			tok = "~" + tok
		}
		out = append(out, tok)
	}
	return strings.Join(out, " | ")
}

const em = "customers.email"

func TestAnalyze(t *testing.T) {
	for _, tc := range []struct{ sql, want string }{
		// The leaking list of issue 10.
		{"SELECT reverse(email) FROM customers", "~" + em},
		{"SELECT email::bytea FROM customers", "~" + em},
		{"SELECT encode(email::bytea, 'base64') FROM customers", "~" + em},
		{"SELECT split_part(email, '@', 1) FROM customers", "~" + em},
		{"SELECT substr(email, 1, 8) FROM customers", "~" + em},
		{"SELECT regexp_replace(email, '@', '#') FROM customers", "~" + em},
		{"SELECT email || '.' FROM customers", "~" + em},
		{"SELECT ROW(email) FROM customers", "~" + em},
		{"SELECT array[email] FROM customers", "~" + em},
		{"SELECT json_build_object('e', email) FROM customers", "~" + em},
		{"SELECT (SELECT email FROM customers LIMIT 1)", "=" + em},
		{"SELECT (SELECT upper(c.email) FROM customers c LIMIT 1) AS x", "~" + em},
		{"WITH c AS (SELECT email AS e FROM customers) SELECT e FROM c", "=" + em},
		{"WITH c(x) AS (SELECT email FROM customers) SELECT upper(x) FROM c", "~" + em},
		{"WITH RECURSIVE r(n, e) AS (SELECT 1, ''::text UNION ALL SELECT n + 1, e || (SELECT email FROM customers LIMIT 1) FROM r WHERE n < 3) SELECT n, e FROM r", " | ~" + em},
		{"SELECT id, mail FROM v_customers", "=customers.id | ~" + em},
		{"SELECT * FROM v_plain", "=customers.id | =" + em},
		{"SELECT full_name FROM customers UNION SELECT email FROM customers", "~" + em + ",customers.full_name"},
		{"SELECT id FROM orders UNION ALL SELECT id FROM customers", "~customers.id,orders.id"},
		{"SELECT 'x' INTERSECT SELECT email FROM customers", "~" + em},
		{"UPDATE customers SET full_name = 'x' WHERE id = 1 RETURNING email", "=" + em},
		{"DELETE FROM customers WHERE id = 1 RETURNING id, email || ''", "=customers.id | ~" + em},
		{"INSERT INTO orders (id, customer_id, total) SELECT id, id, length(email) FROM customers RETURNING total", "~" + em + ",customers.id,orders.total"},
		{"UPDATE orders o SET total = length(c.email) FROM customers c WHERE c.id = o.customer_id RETURNING o.total", "~" + em + ",orders.total"},
		{"DECLARE cur CURSOR FOR SELECT md5(email) FROM customers", "~" + em},
		{"SELECT get_email(1)", "~" + em},
		{"SELECT echo(email) FROM customers", "~" + em},
		{"SELECT plf()", "?"},
		{"SELECT current_setting('vigil.stash')", "?"},
		{"SELECT current_setting('TimeZone')", ""},
		{"SHOW vigil.stash", "?"},
		{"SELECT setting FROM pg_catalog.pg_settings", "FAIL"},
		{"SELECT query_to_xml('select email from customers', true, false, '')", "?"},
		{"SELECT * FROM customers", "=customers.id | =" + em + " | =customers.full_name | =customers.created_at"},
		{"SELECT c.* FROM customers c JOIN orders o ON o.customer_id = c.id", "=customers.id | =" + em + " | =customers.full_name | =customers.created_at"},
		{"SELECT o.total, c.email FROM orders o, customers c", "=orders.total | =" + em},
		{"SELECT row_to_json(c) FROM customers c", "~customers.created_at," + em + ",customers.full_name,customers.id"},
		{"SELECT x.e FROM (SELECT email AS e FROM customers) x", "=" + em},
		{"SELECT e FROM customers, LATERAL (SELECT email AS e) l", "=" + em},
		{"SELECT u FROM unnest(array(SELECT email FROM customers)) AS u", "~" + em},
		{"SELECT * FROM unnest(array(SELECT email FROM customers)) AS u(v)", "~" + em},
		{"SELECT string_agg(email, ',') FROM customers", "~" + em},
		{"SELECT CASE WHEN id = 1 THEN email END FROM customers", "~" + em + ",customers.id"},
		{"SELECT coalesce(email, 'none') FROM customers", "~" + em},
		{"SELECT email = 'a@b.c' FROM customers", "~" + em},
		{"SELECT ssn FROM hr.staff", "=hr.staff.ssn"},
		{"SELECT id FROM stash", "=pg_temp_3.stash.id"},
		{"SELECT balance FROM accounts", "~accounts.balance," + em},
		{"SELECT balance FROM public.accounts", "=accounts.balance"},
		{"VALUES (1, (SELECT email FROM customers LIMIT 1))", " | =" + em},
		{"COPY (SELECT email FROM customers) TO STDOUT", "=" + em},
		{"COPY customers (email) TO STDOUT", "=" + em},
		{"SELECT xmlelement(name e, email) FROM customers", "~" + em},
		{"SELECT jsonb_agg(c) FROM customers c", "~customers.created_at," + em + ",customers.full_name,customers.id"},
		// Benign: nothing read, or only an allow-listed fact about a value.
		{"SELECT count(*) FROM customers", ""},
		{"SELECT count(DISTINCT email) FROM customers", ""},
		{"SELECT count(email) FROM customers WHERE email LIKE '%@corp'", ""},
		{"SELECT id, created_at FROM customers", "=customers.id | =customers.created_at"},
		{"SELECT email IS NULL FROM customers", ""},
		{"SELECT EXISTS (SELECT 1 FROM customers WHERE email = 'x')", ""},
		{"SELECT id FROM customers WHERE email LIKE 'a%' ORDER BY email", "=customers.id"},
		{"SELECT c.id, sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.id", "=customers.id | ~orders.total"},
		{"SELECT n_with('a%')", ""},
		{"SELECT 1, now(), 'literal'", " |  | "},
		{"SELECT g FROM generate_series(1, 3) g", ""},
		// Not row-returning, or rows from elsewhere.
		{"SHOW search_path", ""},
		{"EXPLAIN SELECT email FROM customers", ""},
		// Fail closed.
		{"SELECT email FROM nowhere", "FAIL"},
		{"SELECT nope FROM customers", "FAIL"},
		{"SELECT * FROM v_loop", "FAIL"},
		{"SELECT no_such_function(email) FROM customers", "FAIL"},
		{"SELEC email", "FAIL"},
	} {
		got := render(Analyze(tc.sql, testCatalog(), Options{}))
		if got != tc.want {
			t.Errorf("%s\n got %q\nwant %q", tc.sql, got, tc.want)
		}
	}
}

func TestAnalyzeKinds(t *testing.T) {
	cat := testCatalog()
	r := Analyze("FETCH 10 FROM cur", cat, Options{})
	if r.Kind != Fetch || r.Name != "cur" {
		t.Fatalf("fetch: %+v", r)
	}
	r = Analyze("EXECUTE s(1)", cat, Options{})
	if r.Kind != Execute || r.Name != "s" {
		t.Fatalf("execute: %+v", r)
	}
	r = Analyze("PREPARE s AS SELECT upper(email) FROM customers WHERE id = $1", cat, Options{})
	if r.Defines != "s" || r.DefinesCursor || render(r) != "~"+em {
		t.Fatalf("prepare: %+v", r)
	}
	r = Analyze("DECLARE c CURSOR WITH HOLD FOR SELECT email FROM customers", cat, Options{})
	if r.Defines != "c" || !r.DefinesCursor || !r.All.Tainted() {
		t.Fatalf("declare: %+v", r)
	}
	// A statement kind the analysis does not know: should it return rows, they are masked.
	if r := Analyze("DO 'BEGIN END'", cat, Options{}); r.Failed != "rows of a DoStmt statement are not analysed" {
		t.Fatalf("unknown kind: %+v", r)
	}
	r = Analyze("DECLARE c CURSOR FOR SELECT email FROM nowhere", cat, Options{})
	if r.Defines != "c" || !r.DefinesCursor || r.Failed == "" {
		t.Fatalf("declare of what cannot be analysed: %+v", r)
	}
	cat.fail = true
	if r := Analyze("SELECT 1 FROM customers", cat, Options{}); r.Failed == "" || !strings.Contains(r.Failed, "catalog down") {
		t.Fatalf("catalog error: %+v", r)
	}
}

func TestCleanFunctions(t *testing.T) {
	q := "SELECT length(email), octet_length(email) FROM customers"
	if got := render(Analyze(q, testCatalog(), Options{})); got != "~"+em+" | ~"+em {
		t.Fatalf("default: %q", got)
	}
	if got := render(Analyze(q, testCatalog(), Options{Clean: []string{"length", "octet_length"}})); got != " | " {
		t.Fatalf("clean: %q", got)
	}
}

func BenchmarkAnalyze(b *testing.B) {
	cat := testCatalog()
	const q = "SELECT c.id, lower(c.email), sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.created_at > now() - interval '1 day' GROUP BY 1, 2"
	for b.Loop() {
		if r := Analyze(q, cat, Options{}); r.Failed != "" {
			b.Fatal(r.Failed)
		}
	}
}
