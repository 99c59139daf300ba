package sqlparse

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/vigil-db/vigil/internal/testpg"
)

// dmlCorpus is the no-effective-WHERE corpus over a fixed schema: victim (the target, 10
// rows) and customers (3 rows). touchesAll says whether the statement updates or deletes
// every row of victim, and is checked against a real PostgreSQL by
// TestEffectiveWhereOnServer; the classifier must flag every statement that does (else
// it is a bypass) and none of the ordinary ones. Add every bypass found here.
var dmlCorpus = []struct {
	sql        string
	args       []any
	touchesAll bool
}{
	// Bypasses found by testing the proxy as an attacker would: each touched every row
	// while the classifier called its WHERE effective.
	{sql: "DELETE FROM victim USING customers WHERE customers.id = 1", touchesAll: true},
	{sql: "UPDATE victim SET name = 'x' FROM customers WHERE customers.id = 1", touchesAll: true},
	{sql: "DELETE FROM victim t WHERE t.id IN (SELECT id FROM victim)", touchesAll: true},
	{sql: "WITH c AS (SELECT id FROM victim) DELETE FROM victim WHERE id IN (SELECT id FROM c)", touchesAll: true},
	{sql: "DELETE FROM victim WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = victim.cid OR true)", touchesAll: true},
	{sql: "DELETE FROM victim WHERE ctid IS NOT NULL", touchesAll: true},
	{sql: "DELETE FROM victim WHERE name SIMILAR TO '%'", touchesAll: true},
	{sql: "DELETE FROM victim WHERE name LIKE '%' || ''", touchesAll: true},
	{sql: "DELETE FROM victim WHERE id = coalesce(NULL::int, id)", touchesAll: true},
	{sql: "DELETE FROM victim WHERE id = coalesce($1, id)", args: []any{nil}, touchesAll: true},
	// Their relatives.
	{sql: "DELETE FROM victim v USING victim w WHERE v.id = w.id", touchesAll: true},
	{sql: "DELETE FROM victim WHERE id IN (SELECT id FROM (SELECT id FROM victim) s)", touchesAll: true},
	{sql: "DELETE FROM victim WHERE EXISTS (SELECT 1 FROM victim v2 WHERE v2.id = victim.id)", touchesAll: true},
	{sql: "DELETE FROM victim WHERE id = (SELECT v2.id FROM victim v2 WHERE v2.id = victim.id)", touchesAll: true},
	{sql: "DELETE FROM victim USING customers WHERE email IS NOT NULL", touchesAll: true},
	{sql: "DELETE FROM victim WHERE name ~ ''", touchesAll: true},
	{sql: "DELETE FROM victim WHERE name ~ 'a*'", touchesAll: true},
	{sql: "DELETE FROM victim WHERE name ~ 'x|'", touchesAll: true},
	{sql: "DELETE FROM victim WHERE name LIKE $1", args: []any{"%"}, touchesAll: true},
	{sql: "DELETE FROM victim WHERE xmin IS NOT NULL", touchesAll: true},
	{sql: "UPDATE victim SET name = 'x' WHERE id = id + 0 OR true", touchesAll: true},
	{sql: "DELETE FROM victim WHERE id IN (SELECT id FROM victim UNION SELECT 1)", touchesAll: true},
	{sql: "MERGE INTO victim v USING customers c ON c.id = 1 WHEN MATCHED THEN DELETE", touchesAll: true},

	// Ordinary statements: they must stay allowed.
	{sql: "DELETE FROM victim WHERE id = 1"},
	{sql: "DELETE FROM victim WHERE id = $1", args: []any{2}},
	{sql: "DELETE FROM victim WHERE id = ANY($1)", args: []any{[]int32{1, 2}}},
	{sql: "DELETE FROM victim WHERE id IN (1, 2, 3)"},
	{sql: "UPDATE victim SET name = 'x' WHERE id BETWEEN 1 AND 3"},
	{sql: "DELETE FROM victim WHERE name LIKE 'ab%'"},
	{sql: "DELETE FROM victim WHERE name ~ '^ab'"},
	{sql: "DELETE FROM victim WHERE lower(name) = 'ab1'"},
	{sql: "DELETE FROM victim WHERE deleted_at IS NOT NULL"},
	{sql: "DELETE FROM victim WHERE created < now() - interval '30 days'"},
	{sql: "UPDATE victim SET flag = true WHERE NOT flag"},
	{sql: "DELETE FROM victim WHERE (id, cid) = (1, 1)"},
	{sql: "DELETE FROM victim USING customers WHERE victim.cid = customers.id AND customers.email = 'a@example.com'"},
	{sql: "UPDATE victim v SET name = c.email FROM customers c WHERE v.cid = c.id AND c.id = 2"},
	{sql: "DELETE FROM victim WHERE cid IN (SELECT id FROM customers WHERE email LIKE 'b%')"},
	{sql: "DELETE FROM victim WHERE NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = victim.cid)"},
	{sql: "DELETE FROM victim WHERE EXISTS (SELECT 1 FROM customers c WHERE c.id = victim.cid AND c.email LIKE 'a%')"},
	{sql: "DELETE FROM victim WHERE id IN (SELECT id FROM victim ORDER BY id LIMIT 2)"},
	{sql: "DELETE FROM victim WHERE id IN (SELECT id FROM victim WHERE name LIKE 'ab%')"},
	{sql: "WITH old AS (SELECT id FROM victim WHERE id < 3) DELETE FROM victim WHERE id IN (SELECT id FROM old)"},
	{sql: "DELETE FROM victim WHERE id = (SELECT max(id) FROM victim)"},
	{sql: "UPDATE victim SET n = n + 1 WHERE id = $1 RETURNING n", args: []any{4}},
	{sql: "MERGE INTO victim v USING customers c ON v.cid = c.id WHEN MATCHED AND c.id = 1 THEN DELETE"},
}

func TestEffectiveWhereCorpus(t *testing.T) {
	for _, tc := range dmlCorpus {
		info := Classify(ProtocolPostgres, tc.sql)
		if !info.Parsed {
			t.Errorf("%q: did not parse: %s", tc.sql, info.ParseError)
			continue
		}
		if got := info.Flags.Has(FlagNoEffectiveWhere); got != tc.touchesAll {
			t.Errorf("%q: no_effective_where %v, want %v", tc.sql, got, tc.touchesAll)
		}
	}
}

// TestEffectiveWhereOnServer runs every corpus statement against a real PostgreSQL, in a
// transaction that is rolled back, and checks the corpus's touchesAll against the rows the
// server really touched: the classifier is judged by the effect, not by the shape.
func TestEffectiveWhereOnServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	srv := testpg.Start(t)
	if _, err := srv.Psql("postgres", `CREATE TABLE customers (id int PRIMARY KEY, email text);
		INSERT INTO customers VALUES (1, 'a@example.com'), (2, 'b@example.com'), (3, NULL);
		CREATE TABLE victim (id int PRIMARY KEY, cid int, name text, n int DEFAULT 0, flag bool DEFAULT false,
			deleted_at timestamptz, created timestamptz DEFAULT now());
		INSERT INTO victim (id, cid, name, flag, deleted_at)
			SELECT i, i % 3 + 1, CASE WHEN i <= 5 THEN 'ab' ELSE 'cd' END || i, i % 2 = 0, CASE WHEN i > 8 THEN now() END
			FROM generate_series(1, 10) i`); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv.DSN("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, tc := range dmlCorpus {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// MERGE … DELETE reports its rows; the others report theirs; UPDATE … RETURNING
		// is read to the end.
		rows, err := tx.Query(ctx, tc.sql, tc.args...)
		if err != nil {
			t.Fatalf("%q: %v", tc.sql, err)
		}
		for rows.Next() {
		}
		tag, err := rows.CommandTag(), rows.Err()
		rows.Close()
		if err != nil {
			t.Errorf("%q: %v", tc.sql, err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if all := tag.RowsAffected() == 10; all != tc.touchesAll {
			t.Errorf("%q touched %d of 10 rows on the server; the corpus says touchesAll=%v", tc.sql, tag.RowsAffected(), tc.touchesAll)
		}
	}
}
