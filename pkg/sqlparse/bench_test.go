package sqlparse

import (
	pg "github.com/pganalyze/pg_query_go/v6"
	"strconv"
	"testing"
)

// benchSeq makes every first-sight text new, across benchmarks and -count runs.
var benchSeq int

const benchSQL = "SELECT u.id, u.email FROM public.users u JOIN orders o ON o.user_id = u.id WHERE u.id = $1 AND o.status = 'open'"

func BenchmarkClassifyCached(b *testing.B) {
	Classify(ProtocolPostgres, benchSQL)
	b.ReportAllocs()
	for b.Loop() {
		Classify(ProtocolPostgres, benchSQL)
	}
}

// BenchmarkClassifyFirstSight classifies texts never seen before (a new literal each time,
// so the cache misses): the cost of the parse, the fingerprint and the walk.
func BenchmarkClassifyFirstSight(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchSeq++
		Classify(ProtocolPostgres, benchSQL+" AND o.id > "+strconv.Itoa(benchSeq))
	}
}

func BenchmarkClassifyFirstSightSimple(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchSeq++
		Classify(ProtocolPostgres, "SELECT * FROM users WHERE id = "+strconv.Itoa(benchSeq))
	}
}

// BenchmarkParseOnly is the floor: pg_query's parse of the same first-sight texts, without
// fingerprint or classification. Compare it with BenchmarkClassifyFirstSight on a loaded
// machine, where absolute numbers drift.
func BenchmarkParseOnly(b *testing.B) {
	i := 0
	for b.Loop() {
		i++
		if _, err := pg.Parse(benchSQL + " AND o.id > " + strconv.Itoa(i)); err != nil {
			b.Fatal(err)
		}
	}
}
