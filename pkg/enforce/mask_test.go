package enforce

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/vigil-db/vigil/pkg/mask"
)

// rawPII are values of the test schema that must never reach a masked principal.
var rawPII = []string{
	"Alice Liddell", "alice@example.com", "123-45-6789", "1990-01-02", "415 555 0100", "4111 1111 1111 1111",
	"Bob Builder", "bob@example.org", "536-22-8761", "1985-05-06",
}

func assertNoPII(t *testing.T, what string, out []byte) {
	t.Helper()
	for _, v := range rawPII {
		if bytes.Contains(out, []byte(v)) {
			t.Errorf("%s: raw PII %q crossed the proxy:\n%s", what, v, out)
		}
	}
}

func TestMaskingEveryFormat(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	c := h.connect(t, "analyst")
	pc := c.PgConn()

	queries := []string{
		"SELECT * FROM customers ORDER BY id",
		"SELECT email, full_name, ssn, birth_date, notes FROM customers",
		"SELECT c.* FROM customers c JOIN accounts a ON a.id = c.id",
		// Computed columns: masked by taint (taint_test.go has the whole evasion corpus).
		"SELECT email || '' AS e, upper(email) AS u, lower(email)::varchar AS v, concat('x: ', email, ' ', ssn) AS cc FROM customers",
		"SELECT row_to_json(c)::jsonb - 'full_name' - 'birth_date' AS j, to_jsonb(email) AS je FROM customers c",
		"SELECT json_build_object('mail', email, 'card', notes) AS j FROM customers",
		"SELECT array_agg(email) AS a FROM customers",
		"SELECT (SELECT email FROM customers WHERE id = 1) AS sub, notes FROM customers",
	}
	for _, q := range queries {
		// Text results over the simple protocol.
		res, err := pc.Exec(ctx, q).ReadAll()
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		var all []byte
		for _, r := range res {
			for _, row := range r.Rows {
				for _, v := range row {
					all = append(append(all, v...), '|')
				}
			}
		}
		assertNoPII(t, "text "+q, all)
		// Binary results over the extended protocol.
		rr := pc.ExecParams(ctx, q, nil, nil, nil, []int16{1}).Read()
		if rr.Err != nil {
			t.Fatalf("binary %s: %v", q, rr.Err)
		}
		all = all[:0]
		for _, row := range rr.Rows {
			for _, v := range row {
				all = append(append(all, v...), '|')
			}
		}
		assertNoPII(t, "binary "+q, all)
		// pgx decoding still works on masked values (valid for their types).
		rows, err := c.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			if _, err := rows.Values(); err != nil {
				t.Fatalf("decoding masked values of %s: %v", q, err)
			}
		}
		if rows.Err() != nil {
			t.Fatalf("%s: %v", q, rows.Err())
		}
	}

	// Strategies: partial keeps the last 4, token is stable, date column becomes NULL.
	var email, ssn1, ssn2 string
	var bd *string
	if err := c.QueryRow(ctx, "SELECT email, ssn, birth_date::text FROM customers WHERE id = 1").Scan(&email, &ssn1, &bd); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(email, ".com") || !strings.HasPrefix(email, "*****") || !strings.HasPrefix(ssn1, mask.TokenPrefix) {
		t.Fatalf("strategies: email %q ssn %q", email, ssn1)
	}
	if err := c.QueryRow(ctx, "SELECT ssn FROM customers WHERE id = 1", pgx.QueryExecModeSimpleProtocol).Scan(&ssn2); err != nil || ssn2 != ssn1 {
		t.Fatalf("token not stable: %q %q %v", ssn1, ssn2, err)
	}

	// COPY TO STDOUT in text, CSV and binary.
	for _, q := range []string{
		"COPY customers TO STDOUT",
		"COPY customers (notes, email) TO STDOUT",
		"COPY customers TO STDOUT WITH (FORMAT csv, HEADER)",
		"COPY (SELECT id, email, 'note: ' || notes FROM customers) TO STDOUT (FORMAT csv, DELIMITER ';')",
		"COPY customers TO STDOUT WITH (FORMAT binary)",
		"COPY (SELECT * FROM customers) TO STDOUT WITH BINARY",
	} {
		var buf bytes.Buffer
		if _, err := pc.CopyTo(ctx, &buf, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if buf.Len() == 0 {
			t.Fatalf("%s: no data", q)
		}
		assertNoPII(t, q, buf.Bytes())
	}

	// Errors that would echo a value are redacted.
	for _, q := range []string{
		"SELECT email::int FROM customers",
		"INSERT INTO customers (id, email) VALUES (3, 'alice@example.com')",
		"SELECT ssn::date FROM customers",
	} {
		_, err := c.Exec(ctx, q)
		if err == nil {
			t.Fatalf("%s: no error", q)
		}
		assertNoPII(t, "error of "+q, []byte(err.Error()+" "+detail(err)))
	}

	// Events say which columns were PII and which left masked.
	e := h.log.Find(t, "SELECT email, full_name, ssn, birth_date, notes FROM customers")
	if strings.Join(e.MaskedColumns, ",") != "customers.email,customers.full_name,customers.ssn,customers.birth_date,customers.notes" {
		t.Fatalf("masked columns: %v (pii %v)", e.MaskedColumns, e.PIIColumns)
	}

	// A principal with raw access sees the values.
	admin := h.connect(t, "postgres")
	if err := admin.QueryRow(ctx, "SELECT email FROM customers WHERE id = 1").Scan(&email); err != nil || email != "alice@example.com" {
		t.Fatalf("raw principal: %q %v", email, err)
	}
	// psql, the everyday client, sees masked values too.
	out, err := h.psql(t, "analyst", "-c", "SELECT * FROM customers", "-c", "COPY customers TO STDOUT")
	if err != nil {
		t.Fatal(err)
	}
	assertNoPII(t, "psql", []byte(out))
}

func detail(err error) string {
	var s string
	if e := asPgError(err); e != nil {
		s = e.Detail + " " + e.Hint + " " + e.Where
	}
	return s
}

// TestMaskingLiteralVariants: statements that differ only in literals share one masking
// plan per session (keyed by decision and row description); every variant's rows are
// masked and every variant's event names its masked columns.
func TestMaskingLiteralVariants(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	pc := h.connect(t, "analyst").PgConn()
	for _, q := range []string{
		"SELECT email, ssn, score FROM customers WHERE id = 1",
		"SELECT email, ssn, score FROM customers WHERE id = 2",
		"SELECT email, ssn, score FROM customers WHERE id = 1 /* another shape */",
		"SELECT email, ssn, score FROM customers WHERE id = 2",
	} {
		res, err := pc.Exec(ctx, q).ReadAll()
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		var all []byte
		for _, r := range res {
			for _, row := range r.Rows {
				for _, v := range row {
					all = append(append(all, v...), '|')
				}
			}
		}
		if len(all) == 0 {
			t.Fatalf("%s: no rows", q)
		}
		assertNoPII(t, q, all)
	}
	for _, sub := range []string{"WHERE id = 1", "WHERE id = 2"} {
		e := h.log.Find(t, sub)
		if !strings.Contains(strings.Join(e.MaskedColumns, ","), "customers.email") {
			t.Errorf("%s: masked columns %v", sub, e.MaskedColumns)
		}
	}
}
