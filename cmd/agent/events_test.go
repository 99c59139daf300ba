package main

import (
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/pkg/event"
)

// TestPrintTable: each event type shows what happened in the STATEMENT column.
func TestPrintTable(t *testing.T) {
	for _, tc := range []struct {
		name string
		e    event.Event
		want []string
	}{
		{"statement", event.Event{Type: event.TypeStatement, Kind: "UPDATE", Statement: "UPDATE t SET a = 1 WHERE b = 2", Error: "42501"},
			[]string{"UPDATE", "[42501] UPDATE t SET a = 1"}},
		{"approval", event.Event{Type: event.TypeApproval, ApprovalID: "ap-0123456789ab", Statement: "ALTER TABLE t DROP COLUMN c",
			Detail: "approved: by os:nobody (1 of 1)", Decision: event.DecisionApprovalRequired, Rule: "ddl"},
			[]string{"APPROVAL", "ap-0123456789ab approved: by os:nobody (1 of 1)"}},
		{"gap", event.Event{Type: event.TypeGap, Lost: 3, Detail: "ring overflow"}, []string{"GAP", "3 lost: ring overflow"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.e.Time = time.Now()
			var b strings.Builder
			if err := printTable(&b, func(f func(*event.Event) error) error { return f(&tc.e) }); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("table without %q:\n%s", w, b.String())
				}
			}
		})
	}
}
