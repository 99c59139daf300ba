package policy

import (
	"strconv"
	"testing"
)

func benchEngine(b *testing.B) *Engine {
	e, err := NewEngine(Default())
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// BenchmarkDecideCached decides a statement the classifier has seen before: the proxy's
// common case.
func BenchmarkDecideCached(b *testing.B) {
	e := benchEngine(b)
	req := &Request{Protocol: "postgres", Source: "proxy", DBUser: "app", Database: "prod", ServerAddr: "10.0.0.1:5432",
		SQL: "SELECT u.id, u.email FROM users u WHERE u.id = $1"}
	e.Decide(req)
	b.ReportAllocs()
	for b.Loop() {
		e.Decide(req)
	}
}

var benchSeq int

// BenchmarkDecideFirstSight decides statements never seen before, in shape as well (a new
// column name each time, so the classifier parses).
func BenchmarkDecideFirstSight(b *testing.B) {
	benchDecide(b, func(n string) string { return "SELECT u.id, u.email FROM users u WHERE u.id = u.c" + n })
}

// BenchmarkDecideLiteralVariant decides statements that differ from one seen before only in
// a literal, as a simple-protocol client sends them: served by the template cache.
func BenchmarkDecideLiteralVariant(b *testing.B) {
	benchDecide(b, func(n string) string { return "SELECT u.id, u.email FROM users u WHERE u.id = " + n })
}

func benchDecide(b *testing.B, sql func(string) string) {
	e := benchEngine(b)
	req := &Request{Protocol: "postgres", Source: "proxy", DBUser: "app", Database: "prod", ServerAddr: "10.0.0.1:5432"}
	b.ReportAllocs()
	for b.Loop() {
		benchSeq++
		req.SQL = sql(strconv.Itoa(benchSeq))
		e.Decide(req)
	}
}
