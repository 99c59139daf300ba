package policy

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/mask"
)

func TestExamplePolicies(t *testing.T) {
	p, err := Load("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(p, WithGetenv(func(k string) string {
		if k == "VIGIL_MASK_KEY" {
			return "k3y"
		}
		return ""
	}))
	if err != nil {
		t.Fatal(err)
	}
	uid := int32(1000)
	for _, tc := range []struct {
		name   string
		req    Request
		action string
		rule   string
		mask   bool
	}{
		{"dba in staging may drop", Request{SQL: "DROP TABLE t", DBUser: "postgres", ServerAddr: "10.20.1.5:5432"}, ActionAllow, "dbas-in-staging", false},
		{"dba via OIDC group in dev db", Request{SQL: "TRUNCATE t", Groups: []string{"dba"}, ServerAddr: "10.9.9.9:5432", Database: "app_dev"}, ActionAllow, "dbas-in-staging", false},
		{"dba in production may not", Request{SQL: "DROP TABLE t", DBUser: "postgres", ServerAddr: "10.30.0.1:5432"}, ActionBlock, "drop-and-truncate", true},
		{"app in staging: guardrails", Request{SQL: "DELETE FROM t", DBUser: "app", ServerAddr: "10.20.1.5:5432"}, ActionBlock, "no-effective-where", true},
		{"staging by host glob", Request{SQL: "DROP TABLE t", DBUser: "dba_ann", ServerAddr: "staging-db-3:5432"}, ActionAllow, "dbas-in-staging", false},
		{"migration tool alters", Request{SQL: "ALTER TABLE t DROP COLUMN c", Process: &event.Process{Exe: "/usr/local/bin/migrate", UID: &uid}}, ActionAlert, "migrations-may-change-schema", true},
		{"same exe, other uid", Request{SQL: "ALTER TABLE t DROP COLUMN c", Process: &event.Process{Exe: "/usr/local/bin/migrate"}}, ActionAllow, DefaultRule, true},
		{"payroll without finance", Request{SQL: "SELECT * FROM hr.payroll"}, ActionRequireApproval, "payroll-only-for-finance", true},
		{"payroll with finance", Request{SQL: "SELECT * FROM payroll", Identity: &event.Identity{Groups: []string{"finance"}}}, ActionAllow, DefaultRule, true},
		{"support masked", Request{SQL: "SELECT * FROM users", Groups: []string{"support"}}, ActionMask, "support-sees-masked", true},
		{"ordinary select", Request{SQL: "SELECT 1"}, ActionAllow, DefaultRule, true},
	} {
		tc.req.Protocol, tc.req.Source = "postgres", "proxy"
		d := e.Decide(&tc.req)
		if d.Action != tc.action || d.Rule != tc.rule || d.Mask != tc.mask {
			t.Errorf("%s: %s by %s (mask %v), want %s by %s (mask %v)", tc.name, d.Action, d.Rule, d.Mask, tc.action, tc.rule, tc.mask)
		}
	}
	if got := e.Environment("10.20.3.4:5432", "x"); got != "staging" {
		t.Errorf("environment = %s", got)
	}
	if got := e.Environment("/var/run/postgresql/.s.PGSQL.5432", "scratch"); got != "dev" {
		t.Errorf("environment = %s", got)
	}
	if got := e.Environment("192.168.1.1:5432", "app"); got != "production" {
		t.Errorf("environment = %s", got)
	}

	req := &Request{Protocol: "postgres", SQL: "SELECT email FROM users", Source: "proxy"}
	for _, tc := range []struct {
		schema, table, column string
		pii                   bool
		strategy              string
	}{
		{"public", "users", "email", true, "token"},
		{"", "customers", "email", true, "token"},
		{"public", "orders", "email", true, "full"}, // the name dictionary
		{"public", "orders", "total", false, "full"},
		{"public", "people", "us_ssn", true, "partial:4"},
		{"public", "cards", "pan", true, "null"},
		{"public", "cards", "id", false, "full"},
	} {
		pii, s, raw := e.Column(req, tc.schema, tc.table, tc.column)
		if pii != tc.pii || s.String() != tc.strategy || raw {
			t.Errorf("Column(%s.%s.%s) = %v %s raw=%v, want %v %s raw=false", tc.schema, tc.table, tc.column, pii, s, raw, tc.pii, tc.strategy)
		}
	}
	dba := &Request{Protocol: "postgres", SQL: "SELECT email FROM users", Source: "proxy", DBUser: "postgres", ServerAddr: "10.20.0.9:5432"}
	if _, _, raw := e.Column(dba, "public", "users", "email"); !raw {
		t.Errorf("a DBA in staging should see raw values")
	}
	if !e.Enforced(&Request{Process: &event.Process{Namespace: "payments", ServiceAccount: "payments-api"}}) ||
		!e.Enforced(&Request{Process: &event.Process{Namespace: "analytics"}}) ||
		e.Enforced(&Request{Process: &event.Process{Namespace: "payments"}}) || e.Enforced(&Request{DBUser: "app"}) {
		t.Error("enforce selectors")
	}
	if len(p.Warnings) != 0 {
		t.Errorf("warnings: %q", p.Warnings)
	}
}

func TestTokenMaskingIsKeyed(t *testing.T) {
	p, err := Load("testdata/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e1, _ := NewEngine(p, WithTokenKey([]byte("a")))
	e2, _ := NewEngine(p, WithTokenKey([]byte("a")))
	e3, _ := NewEngine(p, WithTokenKey([]byte("b")))
	tok := mask.Strategy{Kind: mask.Token}
	v := []byte("ann@example.com")
	a, b, c := e1.Masker().Apply(tok, v), e2.Masker().Apply(tok, v), e3.Masker().Apply(tok, v)
	if string(a) != string(b) || string(a) == string(c) || !strings.HasPrefix(string(a), mask.TokenPrefix) {
		t.Errorf("tokens %s %s %s", a, b, c)
	}
	if _, err := NewEngine(p); err == nil || !strings.Contains(err.Error(), "VIGIL_MASK_KEY") {
		t.Errorf("missing token key env: %v", err)
	}
}

func TestPolicyErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown top-level field", "version: 1\nrulez: []\n", "p.yaml: line 2: field rulez is not known in Policy"},
		{"unknown rule field", "rules:\n  - name: a\n    action: block\n    mtach: {}\n", "p.yaml: line 4: field mtach is not known in Rule"},
		{"unknown match field", "rules:\n  - name: a\n    action: block\n    match:\n      tabels: [t]\n", "p.yaml: line 5: field tabels is not known in Match"},
		{"bad action", "rules:\n  - name: a\n    action: deny\n", `p.yaml: line 3: rules[0].action: unknown action "deny"`},
		{"bad clean function", "sensitive:\n  clean_functions: [length, pg_catalog.upper]\n", `p.yaml: line 2: sensitive.clean_functions[1]: "pg_catalog.upper" is not a function name`},
		{"missing name", "rules:\n  - action: block\n", "p.yaml: line 2: rules[0].name: a rule needs a name"},
		{"duplicate rule", "rules:\n  - name: a\n    action: block\n  - name: a\n    action: allow\n", `p.yaml: line 4: rules[1].name: rule "a" is defined twice`},
		{"bad flag", "rules:\n  - name: a\n    action: block\n    match:\n      flags: [drop, dorp]\n", `p.yaml: line 5: rules[0].match.flags[1]: unknown flag "dorp"`},
		{"bad kind", "rules:\n  - name: a\n    action: block\n    match:\n      kinds: [SELEKT]\n", `line 5: rules[0].match.kinds[0]: unknown statement kind "SELEKT"`},
		{"bad CEL", "rules:\n  - name: a\n    action: block\n    match:\n      when: 'statement.kind =='\n", "p.yaml: line 5: rules[0].match.when: CEL condition"},
		{"non-bool CEL", "rules:\n  - name: a\n    action: block\n    match:\n      when: 'statement.kind + \"x\"'\n", "not bool"},
		{"unknown environment", "rules:\n  - name: a\n    action: block\n    match:\n      environments: [prod]\n", `line 5: rules[0].match.environments[0]: unknown environment "prod"`},
		{"unknown principal", "rules:\n  - name: a\n    action: block\n    match:\n      principals: [admins]\n", `unknown principal group "admins"`},
		{"approval typo", "rules:\n  - name: a\n    action: require_approval\n    approval:\n      hodl: 30s\n", "p.yaml: line 5: field hodl is not known in Approval"},
		{"approval on a block rule", "rules:\n  - name: a\n    action: block\n    approval:\n      hold: 30s\n", "rules[0].approval: an approval block needs action require_approval"},
		{"approval hold without unit", "rules:\n  - name: a\n    action: require_approval\n    approval:\n      hold: 30\n", "line 5: cannot unmarshal !!int `30` into time.Duration"},
		{"approval hold below a second", "rules:\n  - name: a\n    action: require_approval\n    approval:\n      hold: 5ms\n", "rules[0].approval.hold: hold 5ms: want a duration of a second or more"},
		{"approval bad duration", "rules:\n  - name: a\n    action: require_approval\n    approval:\n      expiry: soon\n", "line 5"},
		{"flag typo", "rules:\n  - name: a\n    action: alert\n    flag:\n      fro: 1h\n", "p.yaml: line 5: field fro is not known in RuleFlag"},
		{"flag below a second", "rules:\n  - name: a\n    action: alert\n    flag:\n      for: 5ms\n", "rules[0].flag.for: for 5ms: want a duration of a second or more"},
		{"approval negative count", "rules:\n  - name: a\n    action: require_approval\n    approval:\n      required: -1\n", "rules[0].approval.required: required -1"},
		{"approval unknown group", "rules:\n  - name: a\n    action: require_approval\n    approval:\n      approvers: [dbas]\n", `rules[0].approval.approvers[0]: unknown principal group "dbas" (name a group from principals, or an OS user as os:NAME)`},
		{"approval empty os user", "rules:\n  - name: a\n    action: require_approval\n    approval:\n      approvers: [\"os:\"]\n", "os: needs a user name"},
		{"bad server", "environments:\n  - name: s\n    servers: [\"10.0.0.1:99999\"]\n", `p.yaml: line 3: environments[0].servers[0]: bad port`},
		{"empty environment", "environments:\n  - name: s\n", `environment "s" lists neither servers nor databases`},
		{"bad strategy", "sensitive:\n  strategy: {kind: partial}\n", "p.yaml: line 2: sensitive.strategy: partial masking needs keep_last"},
		{"bad detector", "sensitive:\n  detectors: [email, iban]\n", `unknown detector "iban"`},
		{"empty workload", "principals:\n  x:\n    workloads:\n      - {}\n", "would match every process"},
		{"raw on block", "rules:\n  - name: a\n    action: block\n    raw: true\n", "raw access can only be granted"},
		{"share over 1", "rules:\n  - name: a\n    action: block\n    match:\n      estimated_share_over: 1.5\n", "line 5: rules[0].match.estimated_share_over: want a share of the table from 0 up to (not including) 1, got 1.5"},
		{"negative rows", "rules:\n  - name: a\n    action: block\n    match:\n      estimated_rows_over: -1\n", "rules[0].match.estimated_rows_over: want a row count of 0 or more"},
		{"share as text", "rules:\n  - name: a\n    action: block\n    match:\n      estimated_share_over: half\n", "line 5: cannot unmarshal"},
		{"yaml syntax", "rules: [\n", "p.yaml: "},
		{"wrong type", "version: one\n", "p.yaml: line 1: cannot unmarshal"},
		{"empty", "", "p.yaml: empty policy"},
		{"future version", "version: 2\n", "unsupported policy version 2"},
	} {
		_, err := Parse([]byte(tc.yaml), "p.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to contain %q", tc.name, err, tc.want)
		}
	}
}

// TestWorkloadSelectors: every field a selector sets must match, labels by name and glob,
// and a field the agent did not report never matches.
func TestWorkloadSelectors(t *testing.T) {
	billing := &event.Process{Namespace: "payments", Image: "registry.example.com/billing-api:1.4.2",
		Labels: map[string]string{"app": "billing", "tier": "backend"}}
	for _, tc := range []struct {
		sel  string
		p    *event.Process
		want bool
	}{
		{"image: registry.example.com/billing-api:*", billing, true},
		{"image: registry.example.com/billing-api:*", &event.Process{Namespace: "payments"}, false},
		{"labels: {app: billing}", billing, true},
		{"labels: {app: billing, tier: front*}", billing, false},
		{"labels: {app: bill*, tier: back*}", billing, true},
		{"labels: {team: payments}", billing, false},
		{"labels: {app: billing}", &event.Process{Namespace: "payments"}, false},
		{"{namespace: payments, labels: {app: billing}}", billing, true},
		{"{namespace: analytics, labels: {app: billing}}", billing, false},
	} {
		p, err := Parse([]byte("enforce:\n  workloads:\n    - "+tc.sel+"\n"), "p.yaml")
		if err != nil {
			t.Fatalf("%s: %v", tc.sel, err)
		}
		if len(p.Warnings) != 0 {
			t.Errorf("%s: warnings %q", tc.sel, p.Warnings)
		}
		e, err := NewEngine(p)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.Enforced(&Request{Process: tc.p}); got != tc.want {
			t.Errorf("%s on %+v: %v, want %v", tc.sel, tc.p, got, tc.want)
		}
	}
	if _, err := Parse([]byte("enforce:\n  workloads:\n    - labels: {}\n"), "p.yaml"); err == nil {
		t.Error("an empty label selector was accepted")
	}
}

func TestDecisionJSON(t *testing.T) {
	e, err := NewEngine(Default())
	if err != nil {
		t.Fatal(err)
	}
	d := e.Decide(&Request{Protocol: "postgres", SQL: "GRANT SELECT ON payroll TO bob", Source: "ebpf"})
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got["decision"] != event.DecisionApprovalRequired || got["rule"] != "schema-and-privilege-changes" || got["kind"] != "DCL" || got["message"] == "" {
		t.Errorf("json %s", b)
	}
	if tables, _ := got["tables"].([]any); len(tables) != 1 || tables[0] != "payroll" {
		t.Errorf("tables in %s", b)
	}
}

func TestCELVariables(t *testing.T) {
	uid := int32(0)
	p, err := Parse([]byte(`
rules:
  - name: root-writes
    action: alert
    match:
      when: >-
        principal.uid == 0 && statement.kind in ["INSERT", "UPDATE", "DELETE"] &&
        statement.writes.exists(t, t.startsWith("billing.")) && environment == "production" &&
        source == "ebpf" && principal.namespace == "" && database == "app"
`), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(p)
	if err != nil {
		t.Fatal(err)
	}
	req := &Request{Protocol: "postgres", Source: "ebpf", Database: "app", SQL: "UPDATE billing.invoices SET paid = true WHERE id = 3", Process: &event.Process{UID: &uid}}
	if d := e.Decide(req); d.Rule != "root-writes" {
		t.Errorf("got %s by %s", d.Action, d.Rule)
	}
	req.SQL = "UPDATE other SET paid = true WHERE id = 3"
	if d := e.Decide(req); d.Rule != DefaultRule {
		t.Errorf("got %s by %s", d.Action, d.Rule)
	}
}

func TestMatchers(t *testing.T) {
	for _, tc := range []struct {
		pattern, table string
		want           bool
	}{
		{"payroll", "payroll", true},
		{"payroll", "hr.payroll", true},
		{"hr.payroll", "payroll", true},
		{"hr.payroll", "public.payroll", false},
		{"hr.*", "hr.payroll", true},
		{"Payroll", "payroll", true},
		{"pay*", "payments", true},
		{"pay?oll", "payroll", true},
		{"payroll", "payrolls", false},
	} {
		if got := tableMatch(tc.pattern, tc.table); got != tc.want {
			t.Errorf("tableMatch(%q, %q) = %v", tc.pattern, tc.table, got)
		}
	}
	for _, tc := range []struct {
		pattern, addr string
		want          bool
	}{
		{"10.0.0.0/8", "10.1.2.3:5432", true},
		{"10.0.0.0/8", "11.1.2.3:5432", false},
		{"10.1.2.3", "10.1.2.3:6543", true},
		{"10.1.2.3:5432", "10.1.2.3:6543", false},
		{":5433", "127.0.0.1:5433", true},
		{":5433", "127.0.0.1:5432", false},
		{"[::1]:5432", "[::1]:5432", true},
		{"db-*", "db-7:5432", true},
		{"/var/run/postgresql/*", "/var/run/postgresql/.s.PGSQL.5432", true},
	} {
		sp, err := parseServerPattern(tc.pattern)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		if got := sp.match(tc.addr); got != tc.want {
			t.Errorf("server %q vs %q = %v", tc.pattern, tc.addr, got)
		}
	}
}

// TestApprovers: a rule's approvers are OS users by name and principal groups by email,
// OIDC group or uid workload selector; the decision carries the rule's approval block.
func TestApprovers(t *testing.T) {
	p, err := Parse([]byte(`principals:
  dbas:
    emails: ["*@dba.example.com"]
    oidc_groups: [dba]
    workloads: [{uid: 65534}]
rules:
  - name: ddl
    match: {kinds: [DDL]}
    action: require_approval
    approval: {hold: 30s, approvers: [dbas, "os:carol"], required: 2, expiry: 5m, uses: 3}
`), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEngine(p)
	if err != nil {
		t.Fatal(err)
	}
	d := e.Decide(&Request{Protocol: "postgres", SQL: "ALTER TABLE t DROP COLUMN c"})
	if a := d.Approval; a == nil || a.Hold != 30*time.Second || len(a.Approvers) != 2 || a.Required != 2 || a.Expiry != 5*time.Minute || a.Uses != 3 {
		t.Fatalf("decision's approval %+v", d.Approval)
	}
	u := func(n int32) *int32 { return &n }
	for _, tc := range []struct {
		name string
		a    Approver
		want bool
	}{
		{"os user listed", Approver{OSUser: "carol", UID: u(1002)}, true},
		{"os user not listed", Approver{OSUser: "bob", UID: u(1001)}, false},
		{"uid in the group", Approver{OSUser: "nobody", UID: u(65534)}, true},
		{"email in the group", Approver{Email: "x@dba.example.com"}, true},
		{"email outside", Approver{Email: "x@example.com"}, false},
		{"oidc group", Approver{Groups: []string{"dev", "dba"}}, true},
		{"nothing known", Approver{}, false},
	} {
		if got := e.Approves(d.Approval.Approvers, tc.a); got != tc.want {
			t.Errorf("%s: Approves %v, want %v", tc.name, got, tc.want)
		}
	}
	if !e.Approves(nil, Approver{}) {
		t.Error("an empty approver list refused")
	}
}
