package enforce

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.yaml.in/yaml/v3"

	"github.com/vigil-db/vigil/internal/testch"
	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/forensics"
	"github.com/vigil-db/vigil/pkg/mask"
	"github.com/vigil-db/vigil/pkg/policy"
	"github.com/vigil-db/vigil/pkg/store/clickhouse"
)

type sensitiveCorpus struct {
	Schema string `yaml:"schema"`
	Cases  []struct {
		Name   string   `yaml:"name"`
		Query  string   `yaml:"query"`
		Hidden []string `yaml:"hidden"`
		Shown  []string `yaml:"shown"`
	} `yaml:"cases"`
}

// defaultPolicyRawAdmin is the shipped default policy, with raw access for "postgres".
func defaultPolicyRawAdmin(t testing.TB) *policy.Engine {
	t.Helper()
	p := policy.Default()
	p.Rules = append(p.Rules, policy.Rule{Name: "admin-raw", Match: policy.Match{DBUsers: []string{"postgres"}}, Action: policy.ActionAllow, Raw: true})
	e, err := policy.NewEngine(p, policy.WithTokenKey([]byte("test-key")))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func startSensitive(t *testing.T) (*harness, sensitiveCorpus) {
	t.Helper()
	b, err := os.ReadFile("testdata/sensitive-columns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var corpus sensitiveCorpus
	if err := yaml.Unmarshal(b, &corpus); err != nil {
		t.Fatal(err)
	}
	pg := testpg.Start(t)
	if _, err := pg.Psql("postgres", schemaSQL+corpus.Schema); err != nil {
		t.Fatal(err)
	}
	return startWith(t, pg, defaultPolicyRawAdmin(t)), corpus
}

// rowsText runs q and renders every value, in pgx's binary formats (extended protocol) or
// as text (simple protocol).
func rowsText(t *testing.T, c *pgx.Conn, q string, mode pgx.QueryExecMode) []string {
	t.Helper()
	rows, err := c.Query(context.Background(), q, mode)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		for _, v := range vals {
			out = append(out, fmt.Sprint(v))
		}
	}
	if rows.Err() != nil {
		t.Fatalf("%s: %v", q, rows.Err())
	}
	return out
}

// TestSensitiveColumns: columns known by name (whatever their type), by COMMENT tag and by
// discovery are masked for a masked principal under the shipped default policy.
func TestSensitiveColumns(t *testing.T) {
	h, corpus := startSensitive(t)
	c := h.connect(t, "analyst")
	for _, tc := range corpus.Cases {
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
			t.Run(fmt.Sprintf("%s/%v", tc.Name, mode), func(t *testing.T) {
				got := rowsText(t, c, tc.Query, mode)
				for _, v := range tc.Hidden {
					for _, g := range got {
						if strings.Contains(g, v) {
							t.Errorf("%q crossed the proxy: %q", v, got)
						}
					}
				}
				for _, v := range tc.Shown {
					if !slices.Contains(got, v) {
						t.Errorf("%q was masked away: %q", v, got)
					}
				}
			})
		}
	}

	// The events name the columns that left, masked, and how many rows.
	h.log.Reset()
	rowsText(t, c, "SELECT phone, ssn, address_id FROM people", pgx.QueryExecModeCacheStatement)
	ev := h.log.Wait(t, 1, "masked select", func(e *event.Event) bool { return strings.Contains(e.Statement, "address_id FROM people") })[0]
	if !slices.Equal(ev.PIIColumns, []string{"people.phone", "people.ssn"}) || !slices.Equal(ev.MaskedColumns, ev.PIIColumns) || ev.Rows != 4 {
		t.Errorf("masked event: pii %q masked %q rows %d", ev.PIIColumns, ev.MaskedColumns, ev.Rows)
	}

	// A principal with raw access reads them raw, and its events say so (the egress ledger).
	admin := h.connect(t, "postgres")
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		h.log.Reset()
		got := rowsText(t, admin, "SELECT phone, remark FROM people WHERE id = 1", mode)
		if !slices.Equal(got, []string{"4155550100", "likes cats"}) {
			t.Errorf("raw access, %v: %q", mode, got)
		}
		ev := h.log.Wait(t, 1, "raw select", func(e *event.Event) bool { return strings.Contains(e.Statement, "remark FROM people") })[0]
		if !slices.Equal(ev.PIIColumns, []string{"people.phone", "people.remark"}) || len(ev.MaskedColumns) != 0 || ev.Rows != 1 {
			t.Errorf("raw event, %v: pii %q masked %q rows %d", mode, ev.PIIColumns, ev.MaskedColumns, ev.Rows)
		}
	}
}

// TestDiscoveredColumn: a column named innocuously whose values are emails is found by the
// proxy's scheduled discovery and then masked whole, even its values no detector knows.
func TestDiscoveredColumn(t *testing.T) {
	h, _ := startSensitive(t)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c := h.connect(t, "analyst")
		got := rowsText(t, c, "SELECT note FROM people ORDER BY id", pgx.QueryExecModeSimpleProtocol)
		c.Close(context.Background())
		for _, g := range got {
			if strings.Contains(g, "@example") {
				t.Fatalf("an email crossed the proxy: %q", got)
			}
		}
		if !slices.Contains(got, "dave at example dot com") {
			if !slices.Equal(got, []string{mask.Placeholder, mask.Placeholder, mask.Placeholder, mask.Placeholder}) {
				t.Fatalf("discovered column: %q, want every value masked", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("discovery did not find people.note: %q", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ev := h.log.Wait(t, 1, "discovered", func(e *event.Event) bool {
		return strings.Contains(e.Statement, "note FROM people") && slices.Contains(e.MaskedColumns, "people.note")
	})
	if len(ev) == 0 || metricValue(t, h, "vigil_proxy_pii_discovery_runs_total", "ok") < 1 {
		t.Fatalf("events %v", ev)
	}
}

// TestScan: what `vigil pii scan` prints, from the catalog connection's view.
func TestScan(t *testing.T) {
	h, _ := startSensitive(t)
	conn, err := pgconn.Connect(context.Background(), h.pg.DSN("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), "CREATE TABLE private_notes (body text); REVOKE ALL ON private_notes FROM PUBLIC; GRANT SELECT ON people, customers, accounts TO analyst").ReadAll(); err != nil {
		t.Fatal(err)
	}
	found, skipped, err := Scan(context.Background(), conn, defaultPolicyRawAdmin(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(skipped) != 0 {
		t.Errorf("skipped as postgres: %q", skipped)
	}
	// A login that may not read a table: it is skipped, and said so.
	conn2, err := pgconn.Connect(context.Background(), h.pg.DSN("analyst", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close(context.Background())
	if _, skipped, err := Scan(context.Background(), conn2, defaultPolicyRawAdmin(t)); err != nil || len(skipped) != 1 || !strings.Contains(skipped[0], "private_notes: ERROR: permission denied") {
		t.Errorf("skipped as analyst: %q %v", skipped, err)
	}
	got := map[string]string{}
	for _, f := range found {
		got[f.Table+"."+f.Column] = f.Source + "/" + f.Category
	}
	want := map[string]string{
		"people.phone": "name/phone", "people.ssn": "name/ssn", "people.remark": "comment/",
		"people.note": "discovered/email", "customers.email": "name/email", "customers.ssn": "name/ssn",
		"customers.birth_date": "name/dob",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	for _, k := range []string{"people.id", "people.address_id", "people.email_verified", "people.total", "accounts.balance"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s reported sensitive: %s", k, got[k])
		}
	}
	for _, f := range found {
		if f.Table == "people" && f.Column == "note" && (f.Share != 0.75 || f.Sampled != 4) {
			t.Errorf("note: share %v of %d", f.Share, f.Sampled)
		}
	}
}

func TestParseTag(t *testing.T) {
	def := mask.Strategy{Kind: mask.Full}
	for _, tc := range []struct {
		text     string
		pii, ok  bool
		strategy string
	}{
		{"vigil:pii", true, true, "full"},
		{"customer phone vigil:pii:partial:4", true, true, "partial:4"},
		{"[pii:token]", true, true, "token"},
		{"[PII]", true, true, "full"},
		{"vigil:pii:null", true, true, "null"},
		{"vigil:nopii (checked by legal)", false, true, "full"},
		{"[nopii]", false, true, "full"},
		{"no pii here", false, false, "full"},
		{"piiiii", false, false, "full"},
		{"", false, false, "full"},
	} {
		pii, s, ok := parseTag(tc.text, def)
		if pii != tc.pii || ok != tc.ok || s.String() != tc.strategy {
			t.Errorf("%q: %v %s %v, want %v %s %v", tc.text, pii, s, ok, tc.pii, tc.strategy, tc.ok)
		}
	}
	if tg, ok := classifyTags("", "anon=MASKED WITH VALUE NULL", def); !ok || !tg.pii || tg.sens.Source != policy.SourceLabel {
		t.Errorf("a security label: %+v %v", tg, ok)
	}
	if tg, ok := classifyTags("", "sepgsql=public", def); !ok || tg.pii {
		t.Errorf("a public label: %+v %v", tg, ok)
	}
}

// TestRawReceiversLedger: the proxy's events, stored in ClickHouse, answer "who received
// raw phone numbers, through which workload" with the raw-pii-receivers forensic query.
func TestRawReceiversLedger(t *testing.T) {
	b, err := os.ReadFile("testdata/sensitive-columns.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var corpus sensitiveCorpus
	if err := yaml.Unmarshal(b, &corpus); err != nil {
		t.Fatal(err)
	}
	pg := testpg.Start(t)
	if _, err := pg.Psql("postgres", schemaSQL+corpus.Schema); err != nil {
		t.Fatal(err)
	}
	h := startWith(t, pg, defaultPolicyRawAdmin(t), func(c *Config) {
		c.Identify = func(context.Context, net.Conn) Principal {
			return Principal{Process: &event.Process{PID: 99, Comm: "report-job", Exe: "/opt/reports/report-job", Pod: "reports-1"}}
		}
	})
	rowsText(t, h.connect(t, "analyst"), "SELECT phone FROM people", pgx.QueryExecModeCacheStatement)
	rowsText(t, h.connect(t, "postgres"), "SELECT id, phone FROM people", pgx.QueryExecModeCacheStatement)
	evs := h.log.Wait(t, 2, "selects", func(e *event.Event) bool { return strings.Contains(e.Statement, "phone FROM people") })

	ch := testch.Start(t)
	if _, err := ch.Query("CREATE DATABASE vigil"); err != nil {
		t.Fatal(err)
	}
	cfg, err := clickhouse.ParseURL(ch.DSN("vigil"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := clickhouse.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i, e := range evs {
		e.AgentID, e.Seq, e.Hash = "agent-1", uint64(i+1), fmt.Sprintf("h%d", i+1)
		if i > 0 {
			e.PrevHash = evs[i-1].Hash
		}
	}
	if err := st.Append(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := forensics.Run(context.Background(), st.Conn(), "raw-pii-receivers", map[string]string{"column": "%phone%", "since": "1h"}, &out, forensics.FormatJSON); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `"raw_column":"people.phone"`) || !strings.Contains(lines[0], `"db_user":"postgres"`) ||
		!strings.Contains(lines[0], `"process_exe":"/opt/reports/report-job"`) || !strings.Contains(lines[0], `"rows":4`) {
		t.Fatalf("raw receivers:\n%s", out.String())
	}
}
