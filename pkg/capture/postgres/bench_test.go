package postgres

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/vigil-db/vigil/pkg/event"
)

// benchRoundTrip feeds the same request and response over and over; ns/op is one
// statement (request and response, two Feed calls).
func benchRoundTrip(b *testing.B, cfg Config, prepare, req, resp []byte) {
	var n int
	s := NewSession(cfg, func(*event.Event) { n++ })
	for _, st := range std {
		if st.client != nil {
			s.Feed(true, enc(b, st.client...), t0)
		} else {
			s.Feed(false, enc(b, st.server...), t0)
		}
	}
	if prepare != nil {
		s.Feed(true, prepare, t0)
		s.Feed(false, enc(b, parseOK, paramDesc, rowDesc(), rfq()), t0)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(req) + len(resp)))
	b.ResetTimer()
	for range b.N {
		s.Feed(true, req, t0)
		s.Feed(false, resp, t0)
	}
	b.StopTimer()
	if n != b.N {
		b.Fatalf("%d events for %d round trips; stats %+v", n, b.N, s.Stats())
	}
}

func pgbenchRow() *pgproto3.RowDescription {
	return &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("abalance"), TableOID: 16398, TableAttributeNumber: 3, DataTypeOID: 23, DataTypeSize: 4, TypeModifier: -1}}}
}

// BenchmarkPgbenchSimple is pgbench -S -M simple: Query; RowDescription, DataRow,
// CommandComplete, ReadyForQuery.
func BenchmarkPgbenchSimple(b *testing.B) {
	req := enc(b, q("SELECT abalance FROM pgbench_accounts WHERE aid = 48613;"))
	resp := enc(b, pgbenchRow(), row("0"), cc("SELECT 1"), rfq())
	benchRoundTrip(b, Config{}, nil, req, resp)
}

// BenchmarkPgbenchPrepared is pgbench -S -M prepared: Bind, Describe, Execute, Sync of a
// named statement; BindComplete, RowDescription, DataRow, CommandComplete, ReadyForQuery.
func BenchmarkPgbenchPrepared(b *testing.B) {
	prep := enc(b, parse("P0_1", "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"), describe('S', "P0_1"), syncMsg)
	req := enc(b, bind("", "P0_1", nil, []byte("48613")), describe('P', ""), execute("", 0), syncMsg)
	resp := enc(b, bindOK, pgbenchRow(), row("0"), cc("SELECT 1"), rfq())
	b.Run("params", func(b *testing.B) { benchRoundTrip(b, Config{RecordParams: true}, prep, req, resp) })
	b.Run("noparams", func(b *testing.B) { benchRoundTrip(b, Config{}, prep, req, resp) })
}

// BenchmarkPgxBinary is pgx's cached statement: Parse and Describe of a named statement
// once (the server's ParameterDescription gives the parameter types), then Bind with a
// binary int4, Describe, Execute and Sync per query. With params, the binary parameter is
// decoded by its type.
func BenchmarkPgxBinary(b *testing.B) {
	prep := enc(b, parse("stmtcache_1", "SELECT abalance FROM pgbench_accounts WHERE aid = $1"), describe('S', "stmtcache_1"), syncMsg)
	req := enc(b, bind("", "stmtcache_1", []int16{1}, []byte{0, 0, 0xbd, 0xe5}), describe('P', ""), execute("", 0), syncMsg)
	resp := enc(b, bindOK, pgbenchRow(), row("0"), cc("SELECT 1"), rfq())
	b.Run("params", func(b *testing.B) { benchRoundTrip(b, Config{RecordParams: true}, prep, req, resp) })
	b.Run("noparams", func(b *testing.B) { benchRoundTrip(b, Config{}, prep, req, resp) })
}

// BenchmarkPgbenchExtended is pgbench -S -M extended: an unnamed Parse every time.
func BenchmarkPgbenchExtended(b *testing.B) {
	req := enc(b, parse("", "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"), bind("", "", nil, []byte("48613")),
		describe('P', ""), execute("", 0), syncMsg)
	resp := enc(b, parseOK, bindOK, pgbenchRow(), row("0"), cc("SELECT 1"), rfq())
	benchRoundTrip(b, Config{RecordParams: true}, nil, req, resp)
}

// BenchmarkManyRows is a 1000-row result: the per-DataRow cost.
func BenchmarkManyRows(b *testing.B) {
	req := enc(b, q("SELECT * FROM t"))
	var msgs []encoder
	msgs = append(msgs, rowDesc())
	for range 1000 {
		msgs = append(msgs, &pgproto3.DataRow{Values: [][]byte{[]byte("12345"), []byte("some text value")}})
	}
	msgs = append(msgs, cc("SELECT 1000"), rfq())
	benchRoundTrip(b, Config{}, nil, req, enc(b, msgs...))
}

// BenchmarkResyncGarbage feeds bytes that never form a message, in small chunks: the cost
// per byte of looking for a boundary (each byte is judged once).
func BenchmarkResyncGarbage(b *testing.B) {
	garbage := make([]byte, 64<<10)
	x := uint32(1)
	for i := range garbage {
		x = x*1103515245 + 12345
		garbage[i] = byte(x >> 16)
		if i%7 == 0 {
			garbage[i] = 0 // zeros make plausible lengths, the expensive case
		}
	}
	s := NewSession(Config{}, func(*event.Event) {})
	b.SetBytes(int64(len(garbage)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		for off := 0; off < len(garbage); off += 100 {
			s.Feed(false, garbage[off:min(off+100, len(garbage))], t0)
		}
	}
}
