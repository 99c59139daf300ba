package sqlparse

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// served reports whether the template cache holds a classification it serves for sql.
func served(t *testing.T, sql string) bool {
	t.Helper()
	tpl, ok := scanTemplate(sql)
	if !ok {
		return false
	}
	e, ok := templateCache.get(ProtocolPostgres, tpl.key)
	return ok && e.info != nil && e.verified()
}

// TestTemplateServesLiteralVariants: texts that differ only in literals get, from the
// template cache, exactly the classification a fresh parse gives them, their own text
// included.
func TestTemplateServesLiteralVariants(t *testing.T) {
	tests := []struct{ name, first, second string }{
		{"pgbench select", "SELECT abalance FROM pgbench_accounts WHERE aid = 4711;", "SELECT abalance FROM pgbench_accounts WHERE aid = 99;"},
		{"string literal", "SELECT * FROM users WHERE email = 'a@example.com'", "SELECT * FROM users WHERE email = 'it''s -- not /* a comment'"},
		{"negative and float", "SELECT * FROM t WHERE a > -5 AND b < 1.5e3 LIMIT 10", "SELECT * FROM t WHERE a > -7 AND b < 2.25e1 LIMIT 99"},
		{"update with filter", "UPDATE pgbench_accounts SET abalance = abalance + 10 WHERE aid = 3", "UPDATE pgbench_accounts SET abalance = abalance + 4000 WHERE aid = 77"},
		{"insert values", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP)", "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (10, 20, 30, 40, CURRENT_TIMESTAMP)"},
		{"delete with filter", "DELETE FROM orders WHERE id = 1 AND status = 'open'", "DELETE FROM orders WHERE id = 123456 AND status = 'closed'"},
		{"multi statement", "SELECT 1; UPDATE t SET a = 'x' WHERE id = 2", "SELECT 100; UPDATE t SET a = 'longer value' WHERE id = 3"},
		{"typmod and cast", "SELECT x::varchar(10), '2024-01-01'::date FROM t", "SELECT x::varchar(20), '1999-12-31'::date FROM t"},
		{"cte and join", "WITH r AS (SELECT id FROM users WHERE age > 30) SELECT o.* FROM orders o JOIN r ON r.id = o.user_id WHERE o.total > 100", "WITH r AS (SELECT id FROM users WHERE age > 18) SELECT o.* FROM orders o JOIN r ON r.id = o.user_id WHERE o.total > 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			Classify(ProtocolPostgres, tt.first)
			if !served(t, tt.second) {
				t.Fatalf("template of %q not served", tt.first)
			}
			got := Classify(ProtocolPostgres, tt.second)
			want := classify(ProtocolPostgres, tt.second)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("served %+v\nfresh  %+v", got, want)
			}
			if _, cached := defaultCache.get(ProtocolPostgres, tt.second); cached {
				t.Errorf("served text was put in the text cache")
			}
		})
	}
}

// TestTemplateNeverServesLiteralDependent: where a literal's value changes the
// classification, the second text is classified afresh.
func TestTemplateNeverServesLiteralDependent(t *testing.T) {
	tests := []struct{ name, first, second string }{
		{"or tautology", "DELETE FROM t WHERE a = 1 OR 'x' = 'x'", "DELETE FROM t WHERE a = 1 OR 'x' = 'y'"},
		{"complementary pair", "UPDATE t SET b = 0 WHERE a = 1 OR a <> 1", "UPDATE t SET b = 0 WHERE a = 1 OR a <> 2"},
		{"regex matching all", "DELETE FROM t WHERE a ~ ''", "DELETE FROM t WHERE a ~ 'x'"},
		{"like matching all", "UPDATE t SET b = 1 WHERE a LIKE '%'", "UPDATE t SET b = 1 WHERE a LIKE 'x%'"},
		{"constant where", "DELETE FROM t WHERE 1 = 1", "DELETE FROM t WHERE 1 = 0"},
		{"set_config role", "SELECT set_config('role', 'admin', false)", "SELECT set_config('application_name', 'x', false)"},
		{"copy target", "COPY t TO '/tmp/a'", "COPY t TO '/var/lib/postgresql/.bashrc'"},
		{"server file", "SELECT pg_read_file('/etc/hostname')", "SELECT pg_read_file('/etc/shadow')"},
		{"explain analyze option", "EXPLAIN (ANALYZE 'off') DELETE FROM t", "EXPLAIN (ANALYZE 'on') DELETE FROM t"},
		{"set role", "SET role = 'app'", "SET role = 'admin'"},
		{"float precision", "SELECT CAST(a AS float(24)) FROM t", "SELECT CAST(a AS float(0)) FROM t"},
		{"column number", "ALTER TABLE t ALTER COLUMN 1 SET STATISTICS 100", "ALTER TABLE t ALTER COLUMN 0 SET STATISTICS 100"},
		{"int4 and numeric", "SELECT a FROM t FETCH FIRST 2147483647 ROWS ONLY", "SELECT a FROM t FETCH FIRST 2147483648 ROWS ONLY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			Classify(ProtocolPostgres, tt.first)
			if served(t, tt.second) {
				t.Fatalf("template of %q is served", tt.first)
			}
			got := Classify(ProtocolPostgres, tt.second)
			if want := classify(ProtocolPostgres, tt.second); !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
		})
	}
	// The differences above are real: the pairs classify differently.
	for _, p := range [][2]string{
		{"DELETE FROM t WHERE a = 1 OR 'x' = 'x'", "DELETE FROM t WHERE a = 1 OR 'x' = 'y'"},
		{"SELECT set_config('role', 'admin', false)", "SELECT set_config('application_name', 'x', false)"},
		{"SELECT CAST(a AS float(24)) FROM t", "SELECT CAST(a AS float(0)) FROM t"},
	} {
		if a, b := Classify(ProtocolPostgres, p[0]), Classify(ProtocolPostgres, p[1]); a.Flags == b.Flags {
			t.Errorf("%q and %q: same flags %v", p[0], p[1], a.Flags)
		}
	}
}

// TestScanTemplate: the scanner finds literals where PostgreSQL's does, and gives up on
// what it does not read exactly.
func TestScanTemplate(t *testing.T) {
	tests := []struct {
		sql  string
		ok   bool
		lits string // token types of the literals found
	}{
		{"SELECT 1", true, "I"},
		{"SELECT 2147483647, 2147483648, 1.5, 1e5, 2.5E-3", true, "IFFFF"},
		{"SELECT 'a', 'it''s', ''", true, "SSS"},
		{`SELECT "it's", "a""b" FROM t WHERE x = $1 AND y = 'v'`, true, "S"},
		{"SELECT a1, a$b, tab2.col3 FROM t9 WHERE c = 5", true, "I"},
		{"SELECT * FROM t", false, ""},
		{"SELECT 1 -- comment", false, ""},
		{"SELECT /* c */ 1", false, ""},
		{"SELECT E'a\\'b'", false, ""},
		{"SELECT 'a\\'", false, ""},
		{"SELECT B'101', X'1F', N'x'", false, ""},
		{"SELECT U&'d\\0061t'", false, ""},
		{`SELECT U&"a" UESCAPE '!'`, false, ""},
		{"SELECT $$x$$", false, ""},
		{"SELECT 'a'\n'b'", false, ""},
		{"SELECT .5", false, ""},
		{"SELECT t.5", false, ""},
		{"SELECT 0x1F", false, ""},
		{"SELECT 1_000", false, ""},
		{"SELECT 12abc", false, ""},
		{"SELECT 1.", false, ""},
		{"SELECT 1e", false, ""},
		{"SELECT 'unterminated", false, ""},
		{"SELECT $1abc", false, ""},
		{"SELECT 1\x00", false, ""},
	}
	for _, tt := range tests {
		tpl, ok := scanTemplate(tt.sql)
		if ok != tt.ok {
			t.Errorf("%q: ok = %v, want %v", tt.sql, ok, tt.ok)
			continue
		}
		if !ok {
			continue
		}
		var toks strings.Builder
		for _, l := range tpl.lits {
			toks.WriteByte(l.tok)
		}
		if toks.String() != tt.lits {
			t.Errorf("%q: literals %q, want %q", tt.sql, toks.String(), tt.lits)
		}
		if !sameLiterals(tt.sql, tpl.lits) {
			res, _ := pg.Scan(tt.sql)
			t.Errorf("%q: PostgreSQL's scanner disagrees: ours %v, its %v", tt.sql, tpl.lits, res.GetTokens())
		}
	}
}

// FuzzTemplate: whenever the template cache would serve a text's classification, a text
// with other literals of the same types classifies, afresh, exactly as served.
func FuzzTemplate(f *testing.F) {
	for _, tc := range corpus {
		f.Add(tc.sql)
	}
	f.Add("SELECT abalance FROM pgbench_accounts WHERE aid = 4711;")
	f.Add("DELETE FROM t WHERE a = 1 OR 'x' = 'x'")
	f.Fuzz(func(t *testing.T, sql string) {
		tpl, ok := scanTemplate(sql)
		if !ok {
			return
		}
		var consts []int32
		e := newTemplateEntry(sql, tpl, classifyPostgres(sql, &consts, nil), consts)
		if e.info == nil || !e.verified() {
			return
		}
		var b strings.Builder
		last := 0
		for _, l := range tpl.lits {
			b.WriteString(sql[last:l.start])
			b.WriteString(map[byte]string{'S': "'zz'", 'I': "42", 'F': "4.5"}[l.tok])
			last = l.end
		}
		b.WriteString(sql[last:])
		variant := b.String()
		vt, ok := scanTemplate(variant)
		if !ok || vt.key != tpl.key {
			t.Fatalf("%q: variant %q has another template", sql, variant)
		}
		if got, want := e.instantiate(variant, vt), classify(ProtocolPostgres, variant); !reflect.DeepEqual(got, want) {
			t.Fatalf("%q served for %q:\n%+v\nfresh:\n%+v", sql, variant, got, want)
		}
	})
}

// TestTemplateVerifiedByPostgresScanner: an entry serves only if PostgreSQL's scanner finds
// the literals where ours did, token type included.
func TestTemplateVerifiedByPostgresScanner(t *testing.T) {
	tests := []struct {
		sql  string
		lits []lit
		want bool
	}{
		{"SELECT 1 FROM t WHERE a = 'x'", []lit{{7, 8, 'I'}, {26, 29, 'S'}}, true},
		{"SELECT 1 FROM t WHERE a = 'x'", []lit{{7, 8, 'F'}, {26, 29, 'S'}}, false},
		{"SELECT 1 FROM t WHERE a = 'x'", []lit{{7, 8, 'I'}}, false},
		{"SELECT 1 FROM t WHERE a = 'x'", []lit{{7, 8, 'I'}, {26, 28, 'S'}}, false},
	}
	for _, tt := range tests {
		e := &templateEntry{info: &Info{}, sql: tt.sql, lits: tt.lits}
		if got := e.verified(); got != tt.want {
			t.Errorf("%q %v: verified %v, want %v", tt.sql, tt.lits, got, tt.want)
		}
	}
}

// TestClassifyShape: for texts the template cache serves, the shared classification agrees
// with Classify's in everything but the statement texts.
func TestClassifyShape(t *testing.T) {
	for i := 0; i < 5; i++ {
		sql := "SELECT abalance FROM pgbench_accounts WHERE aid = " + strconv.Itoa(1000+i) + " AND bid > " + strconv.Itoa(i)
		full, shape := Classify(ProtocolPostgres, sql), ClassifyShape(ProtocolPostgres, sql)
		if full.Kind != shape.Kind || full.Flags != shape.Flags || full.Fingerprint != shape.Fingerprint ||
			!slices.Equal(full.Tables, shape.Tables) || len(full.Statements) != len(shape.Statements) {
			t.Fatalf("%q: shape %+v, classification %+v", sql, shape, full)
		}
		for j := range full.Statements {
			a, b := full.Statements[j], shape.Statements[j]
			a.Text, b.Text = "", ""
			a.start, a.end, b.start, b.end = 0, 0, 0, 0
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("%q statement %d: shape %+v, classification %+v", sql, j, b, a)
			}
		}
	}
	// A literal the classification depends on (the tautology check) is never shared.
	for _, sql := range []string{"DELETE FROM t WHERE 1 = 1", "DELETE FROM t WHERE 1 = 2"} {
		if got, want := ClassifyShape(ProtocolPostgres, sql).Flags, Classify(ProtocolPostgres, sql).Flags; got != want {
			t.Errorf("%q: shape flags %s, classification %s", sql, got, want)
		}
	}
}
