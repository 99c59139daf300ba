package clickhouse

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testch"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store"
)

// startDB starts a throwaway server with an empty database and opens a store on it.
func startDB(t testing.TB, db string) (*testch.Server, *Store) {
	t.Helper()
	srv := testch.Start(t)
	if _, err := srv.Query("CREATE DATABASE " + db); err != nil {
		t.Fatal(err)
	}
	return srv, openStore(t, srv, db)
}

func openStore(t testing.TB, srv *testch.Server, db string) *Store {
	t.Helper()
	cfg, err := ParseURL(srv.DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	cfg.DialTimeout = time.Second
	st, err := Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// fullEvent sets every field of event.Event to a non-zero value, with awkward text.
func fullEvent(seq uint64) *event.Event {
	uid := int32(0)
	return &event.Event{
		Time: time.Date(2026, 11, 25, 13, 14, 15, 123456789, time.UTC).Add(time.Duration(seq) * time.Millisecond),
		Type: event.TypeStatement, Source: event.SourceProxy, Protocol: event.ProtocolPostgres,
		Host: "db-1", AgentID: "agent-1", ChainID: "0123456789abcdef0123456789abcdef", Seq: seq,
		DBUser: "alice", Database: "shop", Application: "psql", ClientAddr: "10.0.0.5:53211", ServerAddr: "/run/postgresql/.s.PGSQL.5432",
		SessionID: "sess-" + fmt.Sprint(seq%3), BackendPID: 4242, TLS: true, Steered: true, SteeredBy: "flag:ad-hoc",
		Process:   &event.Process{PID: 77, UID: &uid, Comm: "psql", Exe: "/usr/bin/psql", ContainerID: "c0ffee", Pod: "pod-1", Namespace: "ns", ServiceAccount: "sa", Cgroup: "/kubepods.slice/pod-1"},
		Identity:  &event.Identity{Issuer: "https://idp", Subject: "sub-1", Email: "alice@example.com", Groups: []string{"dba", "ops"}},
		Statement: "SELECT 'it''s', \"x\"\n\t, '\x00\xff' FROM customers -- ünïcode", StatementTruncated: true,
		Params: []string{"1", "", "two"}, Fingerprint: "fp-123", Kind: "SELECT", Tables: []string{"public.customers", "orders"},
		Rows: -1, DurationUS: 1500, Error: "42P01", ErrorMessage: "relation \"x\" does not exist",
		Decision: event.DecisionMask, Rule: "mask-pii", PIIColumns: []string{"email", "phone"}, MaskedColumns: []string{"email"},
		ApprovalID: "apr-9", Lost: 3, Detail: "detail", Signature: "c2ln", KeyID: "key-1",
		PrevHash: "prev" + fmt.Sprint(seq), Hash: "hash" + fmt.Sprint(seq),
	}
}

func TestRoundTripEveryField(t *testing.T) {
	ctx := context.Background()
	_, st := startDB(t, "vigil")
	minimal := &event.Event{Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC), Type: event.TypeGap, AgentID: "agent-1", Seq: 3, Lost: 10, Detail: "ring buffer full"}
	empties := fullEvent(4)
	empties.Process = &event.Process{}   // present but empty: distinct from nil in JSON
	empties.Identity = &event.Identity{} // likewise
	// Read's order: by agent, chain, seq; minimal has no chain id (a chain from before them).
	in := []*event.Event{minimal, fullEvent(1), fullEvent(2), empties}
	if err := st.Append(ctx, in); err != nil {
		t.Fatal(err)
	}
	var out []*event.Event
	if err := st.Read(ctx, store.Query{}, func(e *event.Event) error { out = append(out, e); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("read %d events, want %d", len(out), len(in))
	}
	for i := range in {
		a, _ := json.Marshal(in[i])
		b, _ := json.Marshal(out[i])
		if string(a) != string(b) || !reflect.DeepEqual(in[i], out[i]) {
			t.Errorf("event %d changed:\n in  %s\n out %s", i, a, b)
		}
	}
}

func TestReadFilters(t *testing.T) {
	ctx := context.Background()
	_, st := startDB(t, "vigil")
	var in []*event.Event
	for i := uint64(1); i <= 30; i++ {
		e := fullEvent(i)
		if i%2 == 0 {
			e.DBUser, e.Tables, e.Decision = "bob", []string{"payments"}, event.DecisionBlock
		}
		in = append(in, e)
	}
	if err := st.Append(ctx, in); err != nil {
		t.Fatal(err)
	}
	base := in[0].Time
	tests := []struct {
		name string
		q    store.Query
		want []uint64
	}{
		{"after seq", store.Query{AfterSeq: 27}, []uint64{28, 29, 30}},
		{"user and limit", store.Query{DBUser: "bob", Limit: 2}, []uint64{28, 30}},
		{"table", store.Query{Table: "payments", AfterSeq: 24}, []uint64{26, 28, 30}},
		{"decision", store.Query{Decision: event.DecisionMask, Until: base.Add(5 * time.Millisecond)}, []uint64{1, 3, 5}},
		{"since at the nanosecond", store.Query{Since: base.Add(28*time.Millisecond + 1)}, []uint64{30}},
		{"session", store.Query{SessionID: "sess-0", AfterSeq: 20}, []uint64{21, 24, 27, 30}},
		{"nothing", store.Query{AgentID: "other"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []uint64
			err := st.Read(ctx, tc.q, func(e *event.Event) error {
				if !tc.q.Match(e) {
					t.Errorf("seq %d does not match the query", e.Seq)
				}
				got = append(got, e.Seq)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMigrateTwiceAndGated(t *testing.T) {
	ctx := context.Background()
	srv, st := startDB(t, "vigil")
	applied, err := st.Migrate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != int(SchemaVersion()) {
		t.Fatalf("first migration applied %v", applied)
	}
	// A second agent (a new connection) finds nothing to do.
	again, err := openStore(t, srv, "vigil").Migrate(ctx)
	if err != nil || len(again) != 0 {
		t.Fatalf("second migration: applied %v, err %v", again, err)
	}
	l, _ := st.Layout(ctx)
	if l.Features.DateTime64 || l.Features.LowCardinality || l.Features.TTL || l.Features.Codecs || l.Features.SkipIndexes || l.Features.NonReplicatedDedup {
		t.Errorf("18.16 detected as %+v", l.Features)
	}
	ddl, err := srv.Query("SHOW CREATE TABLE vigil.audit_events")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"time_ns UInt32", "ReplacingMergeTree", "process_uid Nullable(Int32)"} {
		if !strings.Contains(ddl, want) {
			t.Errorf("events table lacks %q:\n%s", want, ddl)
		}
	}
	for _, bad := range []string{"LowCardinality", "CODEC", "TTL", "DateTime64", "INDEX"} {
		if strings.Contains(ddl, bad) {
			t.Errorf("18.16 events table has %q:\n%s", bad, ddl)
		}
	}
	var all []string
	for v := uint32(1); v <= SchemaVersion(); v++ {
		all = append(all, strconv.FormatUint(uint64(v), 10))
	}
	if v, err := srv.Query("SELECT groupArray(version) FROM (SELECT version FROM vigil.vigil_schema_migrations FINAL ORDER BY version)"); err != nil || v != "["+strings.Join(all, ",")+"]" {
		t.Errorf("recorded versions %q, %v; want every version up to %d", v, err, SchemaVersion())
	}
}
