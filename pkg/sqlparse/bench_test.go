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

// BenchmarkClassifyFirstSight classifies texts never seen before, in shape as well (a new
// alias each time, so both caches miss): the parse, the fingerprint, the walk and the
// template checks.
func BenchmarkClassifyFirstSight(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchSeq++
		Classify(ProtocolPostgres, benchSQL+" AND o.id > o.c"+strconv.Itoa(benchSeq))
	}
}

func BenchmarkClassifyFirstSightSimple(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchSeq++
		Classify(ProtocolPostgres, "SELECT * FROM users WHERE id = c"+strconv.Itoa(benchSeq))
	}
}

// BenchmarkClassifyLiteralVariant classifies texts that differ from one seen before only in
// a literal (a simple-protocol client inlining its values): the template cache serves them.
func BenchmarkClassifyLiteralVariant(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchSeq++
		Classify(ProtocolPostgres, benchSQL+" AND o.id > "+strconv.Itoa(benchSeq))
	}
}

func BenchmarkClassifyLiteralVariantPgbench(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchSeq++
		Classify(ProtocolPostgres, "SELECT abalance FROM pgbench_accounts WHERE aid = "+strconv.Itoa(benchSeq)+";")
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
