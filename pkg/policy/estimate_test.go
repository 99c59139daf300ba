package policy

import (
	"strings"
	"testing"

	"github.com/vigil-db/vigil/pkg/event"
)

// TestEstimateRules: estimate conditions ask for the planner's estimate only for UPDATE,
// DELETE and MERGE through the proxy that no earlier rule refused, and then decide by it,
// failing closed without one.
func TestEstimateRules(t *testing.T) {
	p, err := Parse([]byte(`
rules:
  - name: drop
    match: {flags: [drop]}
    action: block
  - name: blast-radius
    match: {estimated_share_over: 0.5}
    action: block
    message: Too many rows.
  - name: big-batch
    match: {estimated_rows_over: 1000}
    action: require_approval
`), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, sql, source string
		est               *Estimate
		action, rule      string
		needs             bool
		msg               string
	}{
		{name: "delete, not yet estimated", sql: "DELETE FROM t WHERE id > -1", action: ActionAllow, rule: DefaultRule, needs: true},
		{name: "update, not yet estimated", sql: "UPDATE t SET v = 1 WHERE id = 3", action: ActionAllow, rule: DefaultRule, needs: true},
		{name: "merge, not yet estimated", sql: "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", action: ActionAllow, rule: DefaultRule, needs: true},
		{name: "select needs none", sql: "SELECT * FROM t", action: ActionAllow, rule: DefaultRule},
		{name: "insert needs none", sql: "INSERT INTO t VALUES (1)", action: ActionAllow, rule: DefaultRule},
		{name: "capture never asks", sql: "DELETE FROM t WHERE id > -1", source: event.SourceEBPF, action: ActionAllow, rule: DefaultRule},
		{name: "refused before the estimate", sql: "DELETE FROM t WHERE id > -1; DROP TABLE t", action: ActionBlock, rule: "drop"},
		{name: "all ten rows", sql: "DELETE FROM t WHERE id > -1", est: &Estimate{Rows: 10, Table: "public.t", TableRows: 10},
			action: ActionBlock, rule: "blast-radius", msg: "Too many rows. (planner estimate 10 rows of 10 in public.t (100%); the rule's threshold: more than 50% of the table)"},
		{name: "one row", sql: "DELETE FROM t WHERE id = 1", est: &Estimate{Rows: 1, Table: "public.t", TableRows: 10}, action: ActionAllow, rule: DefaultRule},
		{name: "many rows, small share", sql: "DELETE FROM t WHERE id < 5000", est: &Estimate{Rows: 5000, Table: "public.t", TableRows: 1e6},
			action: ActionRequireApproval, rule: "big-batch", msg: "more than 1000 rows"},
		{name: "never analyzed", sql: "DELETE FROM t WHERE id = 1", est: &Estimate{Rows: 1, Table: "public.t", TableRows: -1},
			action: ActionBlock, rule: "blast-radius", msg: "table never analyzed"},
		{name: "explain failed", sql: "DELETE FROM t WHERE id = 1", est: &Estimate{Err: "permission denied for table t"},
			action: ActionBlock, rule: "blast-radius", msg: "no planner estimate (permission denied for table t): treated as over the threshold"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.source
			if src == "" {
				src = event.SourceProxy
			}
			d := e.Decide(&Request{Protocol: "postgres", Source: src, SQL: tc.sql, Estimate: tc.est})
			if d.Action != tc.action || d.Rule != tc.rule || d.NeedsEstimate != tc.needs || !strings.Contains(d.Message, tc.msg) {
				t.Fatalf("got %s by %s (needs estimate %v): %q; want %s by %s (needs %v), message with %q",
					d.Action, d.Rule, d.NeedsEstimate, d.Message, tc.action, tc.rule, tc.needs, tc.msg)
			}
		})
	}
}
