package store

import (
	"testing"
	"time"

	"github.com/vigil-db/vigil/pkg/event"
)

func TestQueryMatch(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	e := &event.Event{Time: t0, Type: event.TypeStatement, Seq: 7, DBUser: "app", Database: "shop", Kind: "DELETE", Tables: []string{"orders", "items"}, Decision: "block"}
	for _, tc := range []struct {
		name string
		q    Query
		want bool
	}{
		{"empty", Query{}, true},
		{"user", Query{DBUser: "app"}, true},
		{"other user", Query{DBUser: "bob"}, false},
		{"table", Query{Table: "items"}, true},
		{"other table", Query{Table: "users"}, false},
		{"since", Query{Since: t0}, true},
		{"until is exclusive", Query{Until: t0}, false},
		{"after seq", Query{AfterSeq: 7}, false},
		{"before after seq", Query{AfterSeq: 6}, true},
		{"type", Query{Type: event.TypeGap}, false},
		{"not type", Query{NotType: event.TypeStatement}, false},
		{"not other type", Query{NotType: event.TypeAnchor}, true},
		{"kind and decision", Query{Kind: "DELETE", Decision: "block"}, true},
	} {
		if got := tc.q.Match(e); got != tc.want {
			t.Errorf("%s: Match = %v, want %v", tc.name, got, tc.want)
		}
	}
}
