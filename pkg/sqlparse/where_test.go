package sqlparse

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.yaml.in/yaml/v3"

	"github.com/vigil-db/vigil/internal/testpg"
)

// WhereCase is one statement of the effective-WHERE corpora in testdata: where_evasions.yaml
// (statements that touch every row of victim and must be flagged no_effective_where: add
// every bypass found there) and where_benign.yaml (ordinary statements that must not be).
// Args are bound with the extended protocol.
type whereCase struct {
	SQL  string `yaml:"sql"`
	Args []any  `yaml:"args"`
	// TouchesAll is set for the evasions.
	TouchesAll bool `yaml:"-"`
}

// loadWhereCorpus reads both corpora.
func loadWhereCorpus(t *testing.T) []whereCase {
	t.Helper()
	var all []whereCase
	for _, f := range []struct {
		name string
		all  bool
	}{{"testdata/where_evasions.yaml", true}, {"testdata/where_benign.yaml", false}} {
		b, err := os.ReadFile(f.name)
		if err != nil {
			t.Fatal(err)
		}
		var cs []whereCase
		if err := yaml.Unmarshal(b, &cs); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		for i := range cs {
			cs[i].TouchesAll = f.all
		}
		all = append(all, cs...)
	}
	return all
}

// boundParams is how the proxy hands a Bind's text-format values to ClassifyBound.
func boundParams(args []any) []Param {
	ps := make([]Param, len(args))
	for i, a := range args {
		if a == nil {
			ps[i] = Param{Null: true}
		} else {
			ps[i] = Param{Known: true, Text: fmt.Sprint(a)}
		}
	}
	return ps
}

// flagged is the verdict the proxy reaches: at Parse, and at Bind when it depends on the
// values.
func (c whereCase) flagged() (parse, bind bool, err error) {
	info := Classify(ProtocolPostgres, c.SQL)
	if !info.Parsed {
		return false, false, fmt.Errorf("did not parse: %s", info.ParseError)
	}
	parse = info.Flags.Has(FlagNoEffectiveWhere)
	if c.Args == nil || !info.BindDependent() {
		return parse, parse, nil
	}
	return parse, ClassifyBound(c.SQL, boundParams(c.Args)).Flags.Has(FlagNoEffectiveWhere), nil
}

func TestEffectiveWhereCorpus(t *testing.T) {
	for _, tc := range loadWhereCorpus(t) {
		parse, bind, err := tc.flagged()
		if err != nil {
			t.Errorf("%q: %v", tc.SQL, err)
			continue
		}
		if bind != tc.TouchesAll {
			t.Errorf("%q %v: no_effective_where %v, want %v", tc.SQL, tc.Args, bind, tc.TouchesAll)
		}
		if tc.TouchesAll && !parse {
			// The Parse verdict must hold for every value a Bind may bring.
			t.Errorf("%q: not flagged at Parse", tc.SQL)
		}
	}
}

func TestClassifyBound(t *testing.T) {
	for _, tc := range []struct {
		sql        string
		params     []Param
		dependent  bool // the Parse verdict rests on the parameters
		touchesAll bool // at Bind with params
	}{
		{"DELETE FROM t WHERE id = coalesce($1, id)", []Param{{Null: true}}, true, true},
		{"DELETE FROM t WHERE id = coalesce($1, id)", []Param{{Known: true, Text: "5"}}, true, false},
		// A binary value: not NULL, but unread.
		{"DELETE FROM t WHERE id = coalesce($1, id)", []Param{{}}, true, false},
		{"DELETE FROM t WHERE name LIKE $1", []Param{{}}, true, true},
		{"DELETE FROM t WHERE name LIKE $1", []Param{{Known: true, Text: "%_"}}, true, true},
		{"DELETE FROM t WHERE name LIKE $1", []Param{{Known: true, Text: "a%"}}, true, false},
		{"DELETE FROM t WHERE $1", []Param{{Known: true, Text: "true"}}, true, true},
		{"DELETE FROM t WHERE id = $1 OR $2", []Param{{Known: true, Text: "1"}, {Known: true, Text: "false"}}, true, false},
		{"DELETE FROM t WHERE id = $1 OR $2", []Param{{Known: true, Text: "1"}, {Known: true, Text: "t"}}, true, true},
		// Bound to NULL it selects nothing: no worse than at Parse.
		{"DELETE FROM t WHERE $1 AND flag", []Param{{Null: true}}, false, false},
		// Too few values: what is missing may be anything.
		{"DELETE FROM t WHERE id = coalesce($2, id)", []Param{{Known: true, Text: "1"}}, true, true},
		// Not a parameter's doing: Bind changes nothing.
		{"DELETE FROM t WHERE id = id", []Param{{Known: true, Text: "1"}}, false, true},
		// Judged again at Bind, to the same verdict.
		{"DELETE FROM t WHERE id = id AND $1 = 1", []Param{{Known: true, Text: "1"}}, true, true},
		{"DELETE FROM t", nil, false, true},
		// $1 in a function body is the function's argument, not a Bind's.
		{"CREATE FUNCTION f(int) RETURNS void LANGUAGE sql AS 'DELETE FROM t WHERE id = coalesce($1, id)'", nil, false, true},
	} {
		info := Classify(ProtocolPostgres, tc.sql)
		if got := info.BindDependent(); got != tc.dependent {
			t.Errorf("%q: BindDependent %v, want %v", tc.sql, got, tc.dependent)
		}
		if got := ClassifyBound(tc.sql, tc.params).Flags.Has(FlagNoEffectiveWhere); got != tc.touchesAll {
			t.Errorf("%q %+v: bound no_effective_where %v, want %v", tc.sql, tc.params, got, tc.touchesAll)
		}
	}
}

// TestEffectiveWhereOnServer runs every corpus statement against a real PostgreSQL, in a
// transaction that is rolled back, and checks each corpus against the rows the server really
// touched: the classifier is judged by the effect, not by the shape.
func TestEffectiveWhereOnServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	schema, err := os.ReadFile("testdata/where_schema.sql")
	if err != nil {
		t.Fatal(err)
	}
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", string(schema)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv.DSN("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, tc := range loadWhereCorpus(t) {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// UPDATE … RETURNING and SELECTs are read to the end.
		rows, err := tx.Query(ctx, tc.SQL, tc.Args...)
		if err != nil {
			t.Fatalf("%q: %v", tc.SQL, err)
		}
		for rows.Next() {
		}
		tag, err := rows.CommandTag(), rows.Err()
		rows.Close()
		if err != nil {
			t.Errorf("%q: %v", tc.SQL, err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if tag.Select() {
			if tc.TouchesAll {
				t.Errorf("%q: a SELECT among the evasions", tc.SQL)
			}
			continue
		}
		if all := tag.RowsAffected() == 10; all != tc.TouchesAll {
			t.Errorf("%q %v touched %d of 10 rows on the server; the corpus says touchesAll=%v", tc.SQL, tc.Args, tag.RowsAffected(), tc.TouchesAll)
		}
	}
}
