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

// BenchmarkDecideFirstSight decides statements never seen before.
func BenchmarkDecideFirstSight(b *testing.B) {
	e := benchEngine(b)
	req := &Request{Protocol: "postgres", Source: "proxy", DBUser: "app", Database: "prod", ServerAddr: "10.0.0.1:5432"}
	b.ReportAllocs()
	for b.Loop() {
		benchSeq++
		req.SQL = "SELECT u.id, u.email FROM users u WHERE u.id = " + strconv.Itoa(benchSeq)
		e.Decide(req)
	}
}
