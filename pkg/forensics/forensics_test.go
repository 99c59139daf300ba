package forensics

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/vigil-db/vigil/internal/testch"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store/clickhouse"
	"github.com/vigil-db/vigil/pkg/store/local"
)

func TestLibrary(t *testing.T) {
	qs := List()
	if len(qs) < 10 {
		t.Fatalf("%d queries, want at least 10", len(qs))
	}
	for _, q := range qs {
		if _, _, err := q.Bind(requiredParams(q), time.Now()); err != nil {
			t.Errorf("%s: %v", q.Name, err)
		}
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"undeclared placeholder", "-- title: t\n-- description: d\nSELECT {x}", "not a declared param"},
		{"unused param", "-- title: t\n-- description: d\n-- param: x int 1  doc\nSELECT 1", "declared but not used"},
		{"literal question mark", "-- title: t\n-- description: d\nSELECT '?'", "literal ?"},
		{"bad default", "-- title: t\n-- description: d\n-- param: x int many  doc\nSELECT {x}", "not a non-negative integer"},
		{"no title", "-- description: d\nSELECT 1", "needs a title"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(fstest.MapFS{"queries/q.sql": {Data: []byte(tc.text)}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestBind(t *testing.T) {
	q, _ := Get("dangerous-statements")
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		params map[string]string
		want   []any
		err    string
	}{
		{"defaults", nil, []any{uint64(now.Add(-7 * 24 * time.Hour).Unix()), "", "", uint64(500)}, ""},
		{"values", map[string]string{"since": "90m", "decision": "block", "limit": "5"}, []any{uint64(now.Add(-90 * time.Minute).Unix()), "block", "block", uint64(5)}, ""},
		{"rfc3339", map[string]string{"since": "2026-11-01T00:00:00Z"}, []any{uint64(1793491200), "", "", uint64(500)}, ""},
		{"unknown param", map[string]string{"tabel": "x"}, nil, `no parameter "tabel"`},
		{"bad int", map[string]string{"limit": "1; DROP TABLE x"}, nil, "not a non-negative integer"},
		{"bad since", map[string]string{"since": "yesterday"}, nil, "neither a duration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sql, args, err := q.Bind(tc.params, now)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(args) != fmt.Sprint(tc.want) || strings.Count(sql, "?") != len(args) {
				t.Fatalf("args %v, want %v (%d placeholders)", args, tc.want, strings.Count(sql, "?"))
			}
		})
	}
	if _, _, err := mustGet(t, "table-access").Bind(nil, now); err == nil || !strings.Contains(err.Error(), "needs --param table") {
		t.Errorf("missing required param: %v", err)
	}
}

func mustGet(t *testing.T, name string) Query {
	q, ok := Get(name)
	if !ok {
		t.Fatalf("no query %s", name)
	}
	return q
}

// requiredParams gives every required parameter a value.
func requiredParams(q Query) map[string]string {
	p := map[string]string{}
	for _, par := range q.Params {
		if par.Required {
			p[par.Name] = map[string]string{"table": "public.customers", "user": "alice", "session": "s-1"}[par.Name]
		}
	}
	return p
}

// seedNow is the time every Seed lays its trail out from, so that two stores seeded
// seconds apart hold the same events.
var seedNow = time.Now().UTC().Truncate(time.Second)

// Seed writes a small trail that every query has something to say about.
func Seed(t testing.TB, st interface {
	Append(context.Context, []*event.Event) error
}) {
	t.Helper()
	now := seedNow
	var evs []*event.Event
	seq := uint64(0)
	prev := ""
	add := func(e *event.Event) {
		seq++
		e.Seq, e.AgentID, e.Host = seq, "agent-1", "db-1"
		if e.Type == "" {
			e.Type = event.TypeStatement
		}
		e.PrevHash, e.Hash = prev, fmt.Sprintf("h%d", seq)
		prev = e.Hash
		evs = append(evs, e)
	}
	uid := int32(1000)
	psql := &event.Process{PID: 1, UID: &uid, Comm: "psql", Exe: "/usr/bin/psql"}
	// A baseline three days ago: bob reads orders a little every hour.
	for h := 72; h > 24; h-- {
		add(&event.Event{Time: now.Add(-time.Duration(h) * time.Hour), DBUser: "bob", Database: "shop", Kind: "SELECT",
			Tables: []string{"orders"}, Rows: 1, Decision: event.DecisionAllow, Process: psql, SessionID: "s-0"})
	}
	// The last hour: bob suddenly reads a lot; alice exports customers with PII; a new tool appears.
	for i := 0; i < 200; i++ {
		add(&event.Event{Time: now.Add(-30*time.Minute + time.Duration(i)*time.Second), DBUser: "bob", Database: "shop", Kind: "SELECT",
			Tables: []string{"orders"}, Rows: 100, Decision: event.DecisionAllow, Process: psql, SessionID: "s-0"})
	}
	add(&event.Event{Time: now.Add(-20 * time.Minute), DBUser: "alice", Database: "shop", Kind: "SELECT", Tables: []string{"public.customers"},
		Rows: 5000, Decision: event.DecisionAllow, PIIColumns: []string{"email", "phone"}, MaskedColumns: []string{"phone"},
		Identity: &event.Identity{Email: "alice@example.com", Subject: "a1"}, Process: &event.Process{Comm: "exporter", Exe: "/opt/new/exporter"},
		SessionID: "s-1", Statement: "SELECT email, phone FROM public.customers"})
	add(&event.Event{Time: now.Add(-19 * time.Minute), DBUser: "alice", Database: "shop", Kind: "DDL", Tables: []string{"public.customers"},
		Decision: event.DecisionBlock, Rule: "no-drop-in-prod", SessionID: "s-1", Statement: "DROP TABLE public.customers"})
	add(&event.Event{Time: now.Add(-18 * time.Minute), Type: event.TypeApproval, DBUser: "alice", Database: "shop", ApprovalID: "apr-1",
		Decision: event.DecisionApprovalRequired, Detail: "requested", SessionID: "s-1", Statement: "DELETE FROM public.customers WHERE id = 1"})
	add(&event.Event{Time: now.Add(-17 * time.Minute), Type: event.TypeGap, Lost: 12, Detail: "ring buffer overflow seq 500..511"})
	seq += 3 // three events missing: a gap no gap event accounts for
	add(&event.Event{Time: now.Add(-16 * time.Minute), DBUser: "alice", Database: "shop", Kind: "SELECT", Tables: []string{"public.customers"},
		Decision: event.DecisionAllow, SessionID: "s-1", Statement: "SELECT 1"})
	evs[len(evs)-1].PrevHash = "tampered" // after a gap: nothing to link against
	add(&event.Event{Time: now.Add(-15 * time.Minute), DBUser: "alice", Database: "shop", Kind: "SELECT", Decision: event.DecisionAllow, SessionID: "s-1"})
	evs[len(evs)-1].PrevHash = "not-h"
	// A flagged workload, steered into the proxy: its DROP refused.
	job := &event.Process{PID: 4242, UID: &uid, Comm: "psql", Exe: "/usr/bin/psql", Pod: "batch-7"}
	add(&event.Event{Time: now.Add(-10 * time.Minute), DBUser: "etl", Database: "shop", Kind: "SELECT", Decision: event.DecisionAllow,
		SessionID: "s-2", Steered: true, SteeredBy: "batch-jobs", Process: job, Statement: "SELECT count(*) FROM orders"})
	add(&event.Event{Time: now.Add(-9 * time.Minute), DBUser: "etl", Database: "shop", Kind: "DDL", Decision: event.DecisionBlock, Rule: "no-drop-in-prod",
		SessionID: "s-2", Steered: true, SteeredBy: "batch-jobs", Process: job, Statement: "DROP TABLE orders"})
	// The egress ledger: a support tool receives card numbers raw, an analyst masked.
	support := &event.Process{PID: 77, UID: &uid, Comm: "support-ui", Exe: "/srv/support-ui", Pod: "support-5"}
	add(&event.Event{Time: now.Add(-8 * time.Minute), DBUser: "support", Database: "shop", Kind: "SELECT", Tables: []string{"payments"},
		Rows: 40, Decision: event.DecisionAllow, PIIColumns: []string{"payments.card_number", "payments.email"}, MaskedColumns: []string{"payments.email"},
		Identity: &event.Identity{Email: "sam@example.com"}, Process: support, SessionID: "s-3", Statement: "SELECT card_number, email FROM payments"})
	add(&event.Event{Time: now.Add(-7 * time.Minute), DBUser: "analyst", Database: "shop", Kind: "SELECT", Tables: []string{"payments"},
		Rows: 9, Decision: event.DecisionMask, PIIColumns: []string{"payments.card_number"}, MaskedColumns: []string{"payments.card_number"},
		Process: psql, SessionID: "s-4", Statement: "SELECT card_number FROM payments"})
	if err := st.Append(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
}

func TestQueriesOn1816(t *testing.T) {
	ctx := context.Background()
	srv := testch.Start(t)
	if _, err := srv.Query("CREATE DATABASE vigil"); err != nil {
		t.Fatal(err)
	}
	cfg, err := clickhouse.ParseURL(srv.DSN("vigil"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := clickhouse.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	Seed(t, st)
	// What each query must find in the seeded trail (in its JSON output).
	want := map[string][]string{
		"table-access":         {`"db_user":"alice"`, `"identity":"alice@example.com"`, `"kind":"DDL"`},
		"pii-egress":           {`"pii_column":"email","delivery":"raw"`, `"pii_column":"phone","delivery":"masked"`},
		"user-timeline":        {`DROP TABLE public.customers`, `"identity":"alice@example.com"`},
		"dangerous-statements": {`"decision":"block","rule":"no-drop-in-prod","kind":"DDL"`},
		"approvals":            {`"approval_id":"apr-1"`, `"detail":"requested"`},
		"top-talkers":          {`"db_user":"bob","process_comm":"psql"`},
		"new-actor-pairs":      {`"process_exe":"/opt/new/exporter"`},
		"session-replay":       {`"statement":"SELECT email, phone FROM public.customers"`},
		"volume-anomalies":     {`"db_user":"bob"`},
		"trail-integrity":      {`"problem":"missing","from_seq":253,"to_seq":255`, `"problem":"broken_link","from_seq":257`, `"problem":"declared_loss"`},
		"trail-summary":        {`"missing":3`, `"declared_lost":12`},
		"raw-pii-receivers":    {`"raw_column":"payments.card_number","identity":"sam@example.com","db_user":"support"`, `"process_exe":"/srv/support-ui"`, `"process_pod":"support-5"`, `"statements":1,"rows":40`},
		"steered-sessions":     {`"session_id":"s-2","steered_by":"batch-jobs"`, `"process_pod":"batch-7"`, `"statements":2,"blocked":1`, `"a_blocked_statement":"DROP TABLE orders"`},
	}
	for _, q := range List() {
		t.Run(q.Name, func(t *testing.T) {
			var js, table bytes.Buffer
			if err := Run(ctx, st.Conn(), q.Name, requiredParams(q), &js, FormatJSON); err != nil {
				t.Fatal(err)
			}
			if err := Run(ctx, st.Conn(), q.Name, requiredParams(q), &table, FormatTable); err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(strings.TrimSpace(js.String()), "\n") {
				if line != "" && !json.Valid([]byte(line)) {
					t.Errorf("invalid JSON line %s", line)
				}
			}
			w, ok := want[q.Name]
			if !ok {
				t.Fatalf("no expectation for %s", q.Name)
			}
			for _, s := range w {
				if !strings.Contains(js.String(), s) {
					t.Errorf("output lacks %s:\n%s", s, js.String())
				}
			}
			if header := strings.SplitN(table.String(), "\n", 2)[0]; !strings.Contains(header, "  ") {
				t.Errorf("table output has no column header: %q", header)
			}
		})
	}
	// Raw card numbers only: the analyst's masked ones and the support tool's masked emails
	// are not there.
	var cards bytes.Buffer
	if err := Run(ctx, st.Conn(), "raw-pii-receivers", map[string]string{"column": "%CARD%"}, &cards, FormatJSON); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(cards.String()), "\n"); len(lines) != 1 || !strings.Contains(lines[0], `"identity":"sam@example.com"`) {
		t.Errorf("raw card receivers:\n%s", cards.String())
	}
	// The queries that also run on the local store give the same rows from the same trail.
	ls, err := local.Open(t.TempDir(), local.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	Seed(t, ls)
	for _, q := range List() {
		if !RunsLocally(q.Name) {
			continue
		}
		for _, params := range []map[string]string{requiredParams(q), {"column": "%card%"}} {
			var fromCH, fromLocal bytes.Buffer
			if err := Run(ctx, st.Conn(), q.Name, params, &fromCH, FormatJSON); err != nil {
				t.Fatal(err)
			}
			if err := RunLocal(ctx, ls, q.Name, params, &fromLocal, FormatJSON); err != nil {
				t.Fatal(err)
			}
			if fromCH.String() != fromLocal.String() || fromCH.Len() == 0 {
				t.Errorf("%s %v: ClickHouse\n%s\nlocal\n%s", q.Name, params, fromCH.String(), fromLocal.String())
			}
		}
	}
	if err := RunLocal(ctx, ls, "top-talkers", nil, io.Discard, FormatJSON); err == nil || !strings.Contains(err.Error(), "ClickHouse only") {
		t.Errorf("a ClickHouse-only query on the local store: %v", err)
	}
	// A hostile value is a value, not SQL.
	var out bytes.Buffer
	if err := Run(ctx, st.Conn(), "table-access", map[string]string{"table": `x') OR 1=1 OR has(tables, 'y`}, &out, FormatJSON); err != nil {
		t.Fatal(err)
	}
	if out.Len() != 0 {
		t.Errorf("injection returned rows: %s", out.String())
	}
}
