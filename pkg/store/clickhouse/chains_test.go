package clickhouse

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testch"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
)

// chainEvents are n statements of one chain, seq 1..n, all in one hour.
func chainEvents(chain string, n int) []*event.Event {
	base := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	evs := make([]*event.Event, n)
	for i := range evs {
		evs[i] = &event.Event{
			Time: base.Add(time.Duration(i) * time.Second), Type: event.TypeStatement, AgentID: "db-1", ChainID: chain,
			Seq: uint64(i + 1), Statement: fmt.Sprintf("SELECT %d /* %s */", i, chain), Kind: "SELECT", Decision: "allow",
			Hash: fmt.Sprintf("%s-%d", chain, i+1),
		}
	}
	return evs
}

// countFinal counts the rows the table shows once merged.
func countFinal(t *testing.T, srv *testch.Server, table, cond string) uint64 {
	t.Helper()
	if _, err := srv.Query("OPTIMIZE TABLE " + table + " FINAL"); err != nil {
		t.Fatal(err)
	}
	return queryUint(t, srv, "SELECT count() FROM "+table+" FINAL"+cond)
}

// TestTwoChainsOneAgentSameHour: two chains under one agent id (a fresh state directory,
// a second agent given the same id) reuse seqs; in the same hour both are kept whole, in
// the events and in the rollup. Regression: the key (hour, agent_id, seq) collapsed the
// first chain's events into the second's.
func TestTwoChainsOneAgentSameHour(t *testing.T) {
	srv, st := startDB(t, "vigil")
	ctx := context.Background()
	a, b := chainEvents("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 50), chainEvents("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", 50)
	for _, batch := range [][]*event.Event{a, b, a} { // a's batch resent: still once
		if err := st.Append(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	if n := countFinal(t, srv, "vigil.audit_events", ""); n != 100 {
		t.Errorf("events after merging: %d, want 100 (50 per chain)", n)
	}
	if n := countFinal(t, srv, "vigil.audit_activity_1m", ""); n == 0 {
		t.Fatal("no activity rows")
	}
	if n := queryUint(t, srv, "SELECT sum(statements) FROM vigil.audit_activity_1m FINAL"); n != 100 {
		t.Errorf("activity rollup counts %d statements, want 100", n)
	}
	var got []string
	if err := st.Read(ctx, store.Query{}, func(e *event.Event) error {
		got = append(got, fmt.Sprintf("%s/%d", e.ChainID[:1], e.Seq))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 100 || got[0] != "a/1" || got[49] != "a/50" || got[50] != "b/1" {
		t.Errorf("Read: %d events, in order %v…, want chain a's 50 then chain b's", len(got), got[:min(len(got), 3)])
	}
}

// TestUpgradeFromSchema3: a store made by schema 3 (key without chain_id) is upgraded in
// place: its rows stay, with the empty chain id their hashes were computed with, and new
// chains no longer collide.
func TestUpgradeFromSchema3(t *testing.T) {
	srv := testch.Start(t)
	old, err := os.ReadFile(filepath.Join("testdata", "schema-3-18.16.sql"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Query("CREATE DATABASE vigil"); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range strings.Split(string(old), ";\n") {
		if stmt = strings.TrimSpace(stmt); stmt != "" && !strings.HasPrefix(stmt, "--") || strings.Contains(stmt, "CREATE") {
			if out, err := srv.Query(stmt); err != nil {
				t.Fatalf("%s: %v %s", stmt, err, out)
			}
		}
	}
	for v := 1; v <= 3; v++ {
		if out, err := srv.Query(fmt.Sprintf("INSERT INTO vigil.vigil_schema_migrations VALUES (%d, 'v%d', now())", v, v)); err != nil {
			t.Fatal(err, out)
		}
	}
	if out, err := srv.Query("INSERT INTO vigil.audit_events (time, time_ns, type, agent_id, seq, statement, hash) VALUES ('2026-12-03 10:00:00', 0, 'statement', 'db-1', 1, 'SELECT old', 'old-1')"); err != nil {
		t.Fatal(err, out)
	}

	st := openStore(t, srv, "vigil")
	ctx := context.Background()
	applied, err := st.Migrate(ctx)
	if err != nil || len(applied) == 0 || applied[0] != 4 || applied[len(applied)-1] != SchemaVersion() {
		t.Fatalf("Migrate: applied %v, %v; want 4 to %d", applied, err, SchemaVersion())
	}
	for table, key := range map[string]string{"audit_events": eventsKey, "audit_activity_1m": activityKey} {
		if ddl, err := srv.Query("SHOW CREATE TABLE vigil." + table); err != nil || !strings.Contains(ddl, "ORDER BY ("+key+")") {
			t.Errorf("%s after the upgrade (%v):\n%s", table, err, ddl)
		}
	}
	evs := chainEvents("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 3)
	evs[2].Steered, evs[2].SteeredBy = true, "batch-jobs"
	if err := st.Append(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if n := countFinal(t, srv, "vigil.audit_events", ""); n != 4 {
		t.Errorf("events after the upgrade: %d, want the old one and 3 new", n)
	}
	if n := queryUint(t, srv, "SELECT sum(statements) FROM vigil.audit_activity_1m FINAL WHERE chain_id != ''"); n != 3 {
		t.Errorf("the recreated activity view counted %d statements of the new chain, want 3", n)
	}
	var old1, steered *event.Event
	if err := st.Read(ctx, store.Query{}, func(e *event.Event) error {
		switch e.Hash {
		case "old-1":
			old1 = e
		case evs[2].Hash:
			steered = e
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if old1 == nil || old1.ChainID != "" || old1.Statement != "SELECT old" || old1.Steered {
		t.Errorf("the old row after the upgrade: %+v", old1)
	}
	if steered == nil || !steered.Steered || steered.SteeredBy != "batch-jobs" {
		t.Errorf("a steered event after the upgrade: %+v", steered)
	}
	if again, err := st.Migrate(ctx); err != nil || len(again) != 0 {
		t.Errorf("second Migrate: %v, %v", again, err)
	}
}

// TestPublishedHeads: the newest head per chain is kept, as published.
func TestPublishedHeads(t *testing.T) {
	_, st := startDB(t, "vigil")
	ctx := context.Background()
	if hs, err := st.SignedHeads(ctx); err != nil || len(hs) != 0 {
		t.Fatalf("heads of an empty store: %q, %v", hs, err)
	}
	for _, h := range []struct {
		chain string
		seq   uint64
	}{{"a", 10}, {"a", 30}, {"a", 20}, {"b", 5}} {
		raw := fmt.Sprintf(`{"agent_id":"db-1","chain_id":%q,"seq":%d}`, h.chain, h.seq)
		if err := st.PublishHead(ctx, "db-1", h.chain, h.seq, []byte(raw)); err != nil {
			t.Fatal(err)
		}
	}
	hs, err := st.SignedHeads(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"agent_id":"db-1","chain_id":"a","seq":30} {"agent_id":"db-1","chain_id":"b","seq":5}`
	if got := fmt.Sprintf("%s", hs); got != "["+want+"]" {
		t.Errorf("heads: %s, want [%s]", got, want)
	}
}

func TestHeadQueue(t *testing.T) {
	var q headQueue
	for _, s := range []uint64{5, 5, 9, 12} {
		q.push(publishedHead{Seq: s})
	}
	if _, ok := q.popUpTo(4); ok {
		t.Error("a head above what is shipped was published")
	}
	if h, ok := q.popUpTo(10); !ok || h.Seq != 9 {
		t.Errorf("popUpTo(10) = %d, %v; want the newest at or below: 9", h.Seq, ok)
	}
	q.retry(publishedHead{Seq: 9})
	if h, ok := q.popUpTo(20); !ok || h.Seq != 12 || len(q.q) != 0 {
		t.Errorf("popUpTo(20) = %d, %v, %d left; want 12 and none left", h.Seq, ok, len(q.q))
	}
}
