package policy

import (
	"strings"
	"testing"
)

// TestDecideLiteralVariants: the classifier serves statements that differ only in literals
// from its template cache; under the default policy each variant must get the decision the
// statement's own literals call for, and when a rule can see the text (a CEL condition), the
// text must be its own.
func TestDecideLiteralVariants(t *testing.T) {
	e, err := NewEngine(Default())
	if err != nil {
		t.Fatal(err)
	}
	withCEL := Default()
	withCEL.Rules = append([]Rule{{Name: "marker", Action: ActionBlock, Match: Match{When: `statement.text.contains("vigil-marker")`}}}, withCEL.Rules...)
	ce, err := NewEngine(withCEL)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		variants []string
		action   []string // per variant
	}{
		{"point select", []string{
			"SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
			"SELECT abalance FROM pgbench_accounts WHERE aid = 2;",
			"SELECT abalance FROM pgbench_accounts WHERE aid = 300000;",
		}, []string{ActionAllow, ActionAllow, ActionAllow}},
		{"filtered delete", []string{
			"DELETE FROM users WHERE id = 5",
			"DELETE FROM users WHERE id = 6",
		}, []string{ActionAllow, ActionAllow}},
		{"tautology only with some literals", []string{
			"DELETE FROM users WHERE id = 5 OR 'a' = 'b'",
			"DELETE FROM users WHERE id = 5 OR 'a' = 'a'",
			"DELETE FROM users WHERE id = 5 OR 'a' = 'c'",
		}, []string{ActionAllow, ActionBlock, ActionAllow}},
		{"constant predicate", []string{
			"UPDATE users SET name = 'x' WHERE 1 = 2",
			"UPDATE users SET name = 'x' WHERE 1 = 1",
		}, []string{ActionBlock, ActionBlock}},
		{"set_config", []string{
			"SELECT set_config('application_name', 'report', false)",
			"SELECT set_config('role', 'postgres', false)",
			"SELECT set_config('log_statement', 'none', false)",
		}, []string{ActionAllow, ActionBlock, ActionBlock}},
		{"copy to a server file", []string{
			"COPY users TO '/tmp/users.csv'",
			"COPY users TO '/var/lib/postgresql/.psqlrc'",
		}, []string{ActionBlock, ActionBlock}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, sql := range tt.variants {
				req := &Request{Protocol: "postgres", Source: "proxy", DBUser: "app", SQL: sql}
				d := e.Decide(req)
				if d.Action != tt.action[i] {
					t.Errorf("%q: %s (rule %s), want %s", sql, d.Action, d.Rule, tt.action[i])
				}
				d = ce.Decide(req)
				if d.Action != tt.action[i] {
					t.Errorf("%q with a CEL rule: %s (rule %s), want %s", sql, d.Action, d.Rule, tt.action[i])
				}
				for _, st := range d.Info.Statements {
					if !strings.Contains(sql, st.Text) {
						t.Errorf("%q: statement text %q is another text's", sql, st.Text)
					}
				}
			}
		})
	}
}
