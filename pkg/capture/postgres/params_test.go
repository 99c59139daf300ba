package postgres

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"
)

// TestParamTypesCountAgainstBudget: the types a ParameterDescription adds to a named
// statement count against MaxPreparedBytes, and are given back when it is forgotten.
func TestParamTypesCountAgainstBudget(t *testing.T) {
	many := make([]uint32, 100)
	for i := range many {
		many[i] = pgtype.Int4OID
	}
	for _, tc := range []struct {
		name        string
		maxBytes    int
		wantEvicted uint64
	}{
		{"within budget", 1 << 20, 0},
		{"types push the older statement out", 2*len("SELECT 1") + 4*len(many) - 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, s := run(t, Config{RecordParams: true, MaxPreparedBytes: tc.maxBytes}, steps(std, []step{
				c(parse("a", "SELECT 1"), parse("b", "SELECT 1"), describe('S', "b"), syncMsg),
				sv(parseOK, parseOK, &pgproto3.ParameterDescription{ParameterOIDs: many}, noData, rfq()),
			}))
			if got := s.Stats().PreparedEvicted; got != tc.wantEvicted {
				t.Errorf("evicted %d, want %d", got, tc.wantEvicted)
			}
			if s.stmts["b"] == nil || len(s.stmts["b"].oids) != len(many) {
				t.Fatalf("statement b lost its types: %+v", s.stmts["b"])
			}
			var held int
			for _, p := range s.stmts {
				held += p.size()
			}
			if s.namedBytes != held {
				t.Errorf("namedBytes %d, statements hold %d", s.namedBytes, held)
			}
			forget(s, s.stmts, "a")
			forget(s, s.stmts, "b")
			if s.namedBytes != 0 {
				t.Errorf("namedBytes %d after forgetting all", s.namedBytes)
			}
		})
	}
}
