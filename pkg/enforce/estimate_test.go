package enforce

import (
	"context"
	"strings"
	"testing"

	"github.com/vigil-db/vigil/pkg/policy"
)

// TestPlannerBlastRadius: a rule with estimated_share_over refuses an UPDATE/DELETE the
// planner expects to touch more than that share of its table, through the simple and the
// extended protocol (with the Bind's parameters), and names the estimate and the threshold;
// statements the planner cannot estimate are refused (fail closed); statements other rules
// decide, and reads, cost no EXPLAIN.
func TestPlannerBlastRadius(t *testing.T) {
	pg := startPG(t)
	if _, err := pg.Psql("postgres", `CREATE TABLE t (id int PRIMARY KEY, v text);
INSERT INTO t SELECT g, 'x' FROM generate_series(1, 10) g; ANALYZE t; GRANT SELECT, UPDATE, DELETE ON t TO analyst;
CREATE TABLE secret (id int); INSERT INTO secret VALUES (1); ANALYZE secret;`); err != nil {
		t.Fatal(err)
	}
	p := policy.Default()
	share := 0.5
	p.Rules = append(p.Rules, policy.Rule{Name: "blast-radius", Match: policy.Match{EstimatedShareOver: &share},
		Action: policy.ActionBlock, Message: "This statement would change most of the table."})
	e, err := policy.NewEngine(p)
	if err != nil {
		t.Fatal(err)
	}
	h := startWith(t, pg, e)
	ctx := context.Background()
	c := h.connect(t, "analyst")
	refused := func(err error) string {
		if pe := asPgError(err); pe != nil && pe.Code == "42501" && strings.Contains(pe.Message, `"blast-radius"`) {
			return pe.Message
		}
		return ""
	}
	for _, tc := range []struct {
		name, sql string
		args      []any
		want      string // part of the refusal; "" runs
	}{
		{name: "simple, every row", sql: "DELETE FROM t WHERE id > -1", want: "planner estimate 10 rows of 10 in public.t (100%); the rule's threshold: more than 50% of the table"},
		{name: "simple, one row", sql: "DELETE FROM t WHERE id = 10"},
		{name: "update, most rows", sql: "UPDATE t SET v = 'y' WHERE id < 9", want: "rows of 10 in public.t"},
		{name: "extended, every row", sql: "DELETE FROM t WHERE id > $1", args: []any{-1}, want: "rows of 10 in public.t (100%)"},
		{name: "extended, two rows", sql: "DELETE FROM t WHERE id > $1", args: []any{7}},
		{name: "inside a CTE", sql: "WITH d AS (DELETE FROM t WHERE id > -1 RETURNING id) SELECT count(*) FROM d", want: "rows of 10 in public.t"},
		{name: "merge, every row", sql: "MERGE INTO t USING (SELECT id FROM t) s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = 'm'", want: "rows of 10 in public.t"},
		{name: "merge, one row", sql: "MERGE INTO t USING (VALUES (1)) s(id) ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = 'm'"},
		{name: "update joined, one row", sql: "UPDATE t SET v = 'j' FROM (VALUES (2)) s(id) WHERE t.id = s.id"},
		{name: "delete by a list", sql: "DELETE FROM t WHERE id = ANY($1)", args: []any{[]int32{1, 2}}},
		{name: "no privilege: no estimate", sql: "DELETE FROM secret WHERE id = 1", want: "no planner estimate (EXPLAIN: permission denied for table secret"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Exec(ctx, tc.sql, tc.args...)
			msg := refused(err)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused or failed: %v", err)
			case tc.want != "" && !strings.Contains(msg, tc.want):
				t.Fatalf("got %v, want a refusal with %q", err, tc.want)
			}
			ev := h.log.Find(t, tc.sql)
			if tc.want != "" && (!strings.Contains(ev.ErrorMessage, tc.want) || ev.Rule != "blast-radius") {
				t.Fatalf("event: rule %q error %q", ev.Rule, ev.ErrorMessage)
			}
			if !strings.Contains(ev.Detail, "planner estimate") {
				t.Fatalf("event detail without the estimate: %q", ev.Detail)
			}
		})
	}
	var n int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 5 { // 10, less id 10, ids 8 and 9, ids 1 and 2
		t.Fatalf("rows left: %d %v", n, err)
	}
	asked := metricValue(t, h, "vigil_proxy_planner_estimates_total", "ok") + metricValue(t, h, "vigil_proxy_planner_estimates_total", "error")
	// Refused by no-effective-where before any estimate; a read needs none.
	if _, err := c.Exec(ctx, "DELETE FROM t"); err == nil {
		t.Fatal("DELETE without WHERE ran")
	}
	if _, err := c.Exec(ctx, "SELECT * FROM t WHERE id > -1"); err != nil {
		t.Fatal(err)
	}
	if got := metricValue(t, h, "vigil_proxy_planner_estimates_total", "ok") + metricValue(t, h, "vigil_proxy_planner_estimates_total", "error"); got != asked {
		t.Fatalf("estimates asked for statements other rules decided: %v, were %v", got, asked)
	}
}
