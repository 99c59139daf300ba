package sqlparse

import (
	"reflect"
	"strings"
	"testing"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

func TestSplitPostgres(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []string
	}{
		{"one statement", "select 1", []string{"select 1"}},
		{"surrounding space", "  select 1 \n", []string{"select 1"}},
		{"trailing semicolon", "SELECT 1;", []string{"SELECT 1"}},
		{"minus and slash operators", "UPDATE t SET a = a + -12 / 2 WHERE id = 5;", []string{"UPDATE t SET a = a + -12 / 2 WHERE id = 5"}},
		{"semicolon in a line comment", "SELECT 1 -- ;\n;", []string{"SELECT 1 -- ;"}},
		{"semicolon in a block comment", "SELECT 1 /* ; */ ;", []string{"SELECT 1 /* ; */"}},
		{"trailing semicolon and space", " SELECT 1 ; \n", []string{"SELECT 1"}},
		{"two, trailing semicolon", "select 1; select 2;", []string{"select 1", "select 2"}},
		{"no space", "BEGIN;SELECT 1;COMMIT;", []string{"BEGIN", "SELECT 1", "COMMIT"}},
		{"typo in the middle is kept", "SELECT 1; SELEC 2; SELECT 3", []string{"SELECT 1", "SELEC 2", "SELECT 3"}},
		{"typo first", "SELEC 1; SELECT 2", []string{"SELEC 1", "SELECT 2"}},
		{"typo last with a comment", "SELECT 1; SELEC 2 /* c */;", []string{"SELECT 1", "SELEC 2 /* c */"}},
		{"not SQL at all", "hello world; bye", []string{"hello world", "bye"}},
		{"quoted semicolon", "select ';'; select 2", []string{"select ';'", "select 2"}},
		{"quoted identifier", `SELECT "a;" FROM t; SELECT 2`, []string{`SELECT "a;" FROM t`, "SELECT 2"}},
		{"dollar quotes", "select $$a;b$$; select $f$ ; $f$", []string{"select $$a;b$$", "select $f$ ; $f$"}},
		{"function body in dollar quotes", "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; SELECT 2 $$ LANGUAGE sql; SELECT f()",
			[]string{"CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; SELECT 2 $$ LANGUAGE sql", "SELECT f()"}},
		{"BEGIN ATOMIC body", "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END; SELECT f()",
			[]string{"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END", "SELECT f()"}},
		{"BEGIN is a transaction elsewhere", "BEGIN; SELECT CASE WHEN true THEN 1 END; END", []string{"BEGIN", "SELECT CASE WHEN true THEN 1 END", "END"}},
		{"line comment with semicolon", "select 1 -- c;\n; select 2", []string{"select 1 -- c;", "select 2"}},
		{"block comment with semicolon", "select /* ; */ 1; select 2", []string{"select /* ; */ 1", "select 2"}},
		{"nested block comment", "select /* a /* ; */ ; */ 1; select 2", []string{"select /* a /* ; */ ; */ 1", "select 2"}},
		{"trailing comment only", "SELECT 1; -- c", []string{"SELECT 1"}},
		{"comment between", "SELECT 1; /* c */ SELECT 2", []string{"SELECT 1", "/* c */ SELECT 2"}},
		{"E string with escaped quote and semicolon", `SELECT E'a\';b'; SELECT 2`, []string{`SELECT E'a\';b'`, "SELECT 2"}},
		{"E string with backslash semicolon", `SELECT E'a\;b'; SELECT 2`, []string{`SELECT E'a\;b'`, "SELECT 2"}},
		{"standard string ends at quote", `SELECT 'a\'; SELECT 2`, []string{`SELECT 'a\'`, "SELECT 2"}},
		{"empty statements", "SELECT 1;;; ;SELECT 2;", []string{"SELECT 1", "SELECT 2"}},
		{"empty statements and comments", "SELECT 1; /* c */ ;; SELECT 2", []string{"SELECT 1", "SELECT 2"}},
		{"empty", "", []string{""}},
		{"only a semicolon", " ; ", []string{";"}},
		{"only semicolons", ";;", []string{";;"}},
		{"only a comment", "-- only", []string{"-- only"}},
		{"unterminated quote: the server rejects it whole", "SELECT 1; SELECT 'a; SELECT 2", []string{"SELECT 1; SELECT 'a; SELECT 2"}},
		{"unterminated comment", "SELECT 1; /* SELECT 2", []string{"SELECT 1; /* SELECT 2"}},
		{"one semicolon inside quotes", "SELECT 'a;'", []string{"SELECT 'a;'"}},
		{"one semicolon at the end of a comment", "SELECT 1 -- x;", []string{"SELECT 1 -- x;"}},
		{"subtraction", "SELECT 2-1; SELECT 3", []string{"SELECT 2-1", "SELECT 3"}},
		{"pgbench", "SELECT abalance FROM pgbench_accounts WHERE aid = 48613;", []string{"SELECT abalance FROM pgbench_accounts WHERE aid = 48613"}},
		{"Unicode spaces are identifier characters", "SELECT 1 AS x\u00a0;\u2029;", []string{"SELECT 1 AS x\u00a0", "\u2029"}},
		{"a Unicode space after the only semicolon", "SELECT 1;\u00a0", []string{"SELECT 1", "\u00a0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := SplitPostgres(tc.in); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("SplitPostgres(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestSplitFastMatchesScanner: the cgo-free path answers as the scanner would.
func TestSplitFastMatchesScanner(t *testing.T) {
	for _, in := range []string{
		"SELECT 1", "SELECT 1;", " SELECT 1 ; ", "", "UPDATE t SET a = 1 WHERE b = 2",
		"SELECT abalance FROM pgbench_accounts WHERE aid = 48613;", "SELECT 1 -- c", "/* c */ SELECT 1",
		"SELECT 'a'", "SELEC 1;",
	} {
		single, ok := splitFast(in)
		if !ok {
			continue
		}
		if got, want := []string{single}, splitScan(in); !reflect.DeepEqual(got, want) {
			t.Errorf("splitFast(%q) = %q, scanner %q", in, got, want)
		}
	}
}

// FuzzSplitPostgres: statements come back in order, as trimmed pieces of the text, and
// wherever the grammar accepts the text they are exactly the statements it finds.
func FuzzSplitPostgres(f *testing.F) {
	for _, s := range []string{"SELECT 1; SELEC 2; SELECT 3", "select $$a;b$$; select 2", `SELECT E'a\;b'; SELECT 2`,
		"select 1 -- c;\n; select 2", "SELECT 1;;; ;SELECT 2;", "BEGIN; SELECT CASE WHEN true THEN 1 END; END",
		"CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END; SELECT f()"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		if strings.IndexByte(sql, 0) >= 0 {
			t.Skip("a Query message cannot carry NUL; the C scanner and parser stop there")
		}
		parts := SplitPostgres(sql)
		from := 0
		for _, p := range parts {
			k := strings.Index(sql[from:], p)
			if k < 0 || p != trimSpace(p) || (p == "" && len(parts) > 1) {
				t.Fatalf("%q: parts %q not trimmed pieces in order", sql, parts)
			}
			from += k + len(p)
		}
		// pg_query's own trimming is strings.TrimSpace, which also strips Unicode spaces
		// that PostgreSQL reads as identifier characters: trim its statements as the
		// server's scanner does.
		want, err := pg_query.SplitWithParser(sql, false)
		for i := range want {
			want[i] = trimSpace(want[i])
		}
		if err == nil && len(want) > 0 && !reflect.DeepEqual(parts, want) {
			t.Fatalf("%q: split %q, grammar %q", sql, parts, want)
		}
	})
}
