package dashboards

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testch"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/store/clickhouse"
)

func TestExpand(t *testing.T) {
	from, to := time.Unix(1000, 0), time.Unix(2000, 0)
	tests := []struct{ in, want string }{
		{"WHERE $__timeFilter(minute)", "WHERE minute >= toDateTime(1000, 'UTC') AND minute <= toDateTime(2000, 'UTC')"},
		{"x >= $__fromTime AND x <= $__toTime", "x >= toDateTime(1000, 'UTC') AND x <= toDateTime(2000, 'UTC')"},
		{"intDiv(t, $__interval_s)", "intDiv(t, 60)"},
	}
	for _, tc := range tests {
		if got := Expand(tc.in, from, to, time.Minute); got != tc.want {
			t.Errorf("Expand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// The agent-health dashboard shows each metric the agent exports that an operator needs.
func TestAgentHealthMetrics(t *testing.T) {
	qs, err := Queries()
	if err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, q := range qs {
		if q.Datasource == "prometheus" {
			all.WriteString(q.Query + "\n")
		}
	}
	for _, m := range []string{"rate(vigil_capture_statements_total[1m])", "vigil_capture_lost_records_total", "vigil_decoder_errors_total",
		"vigil_decoder_resyncs_total", "vigil_store_local_bytes", "vigil_store_backlog_events", "vigil_export_batch_seconds_bucket",
		"vigil_export_events_total", "vigil_export_errors_total", `vigil_events_total{type="gap"}`} {
		if !strings.Contains(all.String(), m) {
			t.Errorf("no panel queries %s", m)
		}
	}
}

// Every ClickHouse panel query runs on Debian's 18.16 and returns rows from a seeded trail.
func TestPanelQueriesOn1816(t *testing.T) {
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
	now := time.Now().UTC()
	var evs []*event.Event
	for i, d := range []string{event.DecisionAllow, event.DecisionBlock, event.DecisionApprovalRequired, event.DecisionMask} {
		evs = append(evs, &event.Event{Time: now.Add(-time.Duration(i+1) * time.Minute), Type: event.TypeStatement, AgentID: "a", Seq: uint64(i + 1),
			DBUser: "alice", Database: "shop", Kind: "SELECT", Tables: []string{"customers"}, Rows: 3, DurationUS: 1200, Decision: d,
			PIIColumns: []string{"email"}, MaskedColumns: []string{"email"}[:i%2], Process: &event.Process{Comm: "psql"}, Statement: "SELECT email FROM customers",
			Steered: i%2 == 1, SteeredBy: []string{"", "batch-jobs"}[i%2]})
	}
	evs = append(evs, &event.Event{Time: now.Add(-30 * time.Second), Type: event.TypeApproval, AgentID: "a", Seq: uint64(len(evs) + 1),
		DBUser: "alice", Database: "shop", ApprovalID: "apr-1", Rule: "schema-changes", Detail: "approved by os:bob",
		Statement: "ALTER TABLE customers DROP COLUMN card"})
	if err := st.Append(ctx, evs); err != nil {
		t.Fatal(err)
	}
	qs, err := Queries()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, q := range qs {
		if q.Datasource != ClickHouseDatasource {
			continue
		}
		n++
		t.Run(q.Panel, func(t *testing.T) {
			sql := Expand(q.Query, now.Add(-time.Hour), now, time.Minute)
			if strings.Contains(sql, "$") {
				t.Fatalf("unexpanded macro or variable in %s", sql)
			}
			rows, err := st.Conn().Query(ctx, sql)
			if err != nil {
				t.Fatalf("%v\n%s", err, sql)
			}
			defer rows.Close()
			got := 0
			for rows.Next() {
				got++
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if got == 0 {
				t.Errorf("no rows from\n%s", sql)
			}
		})
	}
	if n < 10 {
		t.Errorf("%d ClickHouse panel queries, want at least 10", n)
	}
}
