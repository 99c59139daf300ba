package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/pkg/enforce"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store/local"
)

// TestPIIScan: `vigil pii scan` lists the sensitive columns and why: a bigint phone by its
// name, a column by its COMMENT tag, an innocuously named column of emails by sampling.
func TestPIIScan(t *testing.T) {
	pg := testpg.Start(t)
	if _, err := pg.Psql("postgres", `
CREATE TABLE contacts (id int PRIMARY KEY, phone bigint, remark text, note text, address_id int);
COMMENT ON COLUMN contacts.remark IS 'vigil:pii:partial:2';
INSERT INTO contacts VALUES (1, 4155550100, 'x', 'alice@example.com', 1), (2, 4155550101, 'y', 'bob@example.org', 2),
  (3, 4155550102, 'z', 'carol@example.net', 3), (4, NULL, NULL, 'n/a', 4);`); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	out, err := vigil(t, ctx, "pii", "scan", "--dsn", pg.DSN("postgres", "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"public.contacts.phone   bigint  name        phone",
		`comment "vigil:pii:partial:2"`,
		"discovered  email     75% of 4",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "address_id") || strings.Contains(out, "contacts.id ") {
		t.Errorf("ordinary columns listed:\n%s", out)
	}
	out, err = vigil(t, ctx, "pii", "scan", "--dsn", pg.DSN("postgres", "postgres"), "--json")
	if err != nil {
		t.Fatal(err)
	}
	byCol := map[string]enforce.Finding{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var f enforce.Finding
		if err := json.Unmarshal([]byte(line), &f); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		byCol[f.Column] = f
	}
	if f := byCol["note"]; f.Source != "discovered" || f.Category != "email" || f.Share != 0.75 {
		t.Errorf("note: %+v", f)
	}
	if f := byCol["remark"]; f.Source != "comment" || f.Strategy.String() != "partial:2" {
		t.Errorf("remark: %+v", f)
	}
	if _, err := vigil(t, ctx, "pii", "scan"); err == nil || !strings.Contains(err.Error(), "give --dsn or --config") {
		t.Errorf("no source: %v", err)
	}
}

// TestRawPIIReceiversLocal: the egress ledger's forensic query runs on the agent's local
// store too (no ClickHouse).
func TestRawPIIReceiversLocal(t *testing.T) {
	dir := t.TempDir()
	st, err := local.Open(dir, local.Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	evs := []*event.Event{
		{Seq: 1, AgentID: "a", Time: now.Add(-time.Hour), Type: event.TypeStatement, Source: event.SourceProxy, DBUser: "support", Database: "shop", Rows: 12,
			PIIColumns: []string{"payments.card_number", "payments.email"}, MaskedColumns: []string{"payments.email"},
			Process: &event.Process{Comm: "support-ui", Exe: "/srv/support-ui"}, Identity: &event.Identity{Email: "sam@example.com"}},
		{Seq: 2, AgentID: "a", Time: now.Add(-time.Minute), Type: event.TypeStatement, Source: event.SourceProxy, DBUser: "analyst", Database: "shop", Rows: 3,
			PIIColumns: []string{"payments.card_number"}, MaskedColumns: []string{"payments.card_number"}},
		{Seq: 3, AgentID: "a", Time: now.Add(-8 * 24 * time.Hour), Type: event.TypeStatement, Source: event.SourceProxy, DBUser: "old", Database: "shop", Rows: 1,
			PIIColumns: []string{"payments.card_number"}},
	}
	if err := st.Append(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	st.Close()
	out, err := vigil(t, context.Background(), "forensics", "raw-pii-receivers", "--store", "local:"+dir, "--param", "column=%card%", "--json")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 1 || !strings.Contains(lines[0], `"raw_column":"payments.card_number","identity":"sam@example.com","db_user":"support"`) ||
		!strings.Contains(lines[0], `"process_exe":"/srv/support-ui"`) || !strings.Contains(lines[0], `"statements":1,"rows":12`) {
		t.Fatalf("raw card receivers this week:\n%s", out)
	}
	if _, err := vigil(t, context.Background(), "forensics", "top-talkers", "--store", "local:"+dir); err == nil || !strings.Contains(err.Error(), "ClickHouse only") {
		t.Errorf("a ClickHouse-only query on the local store: %v", err)
	}
}
