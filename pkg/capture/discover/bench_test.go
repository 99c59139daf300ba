package discover

import "testing"

// BenchmarkScan measures one discovery pass over this host's processes.
func BenchmarkScan(b *testing.B) {
	for b.Loop() {
		if _, err := Scan(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBackends measures listing one server's backends (a pass over /proc).
func BenchmarkBackends(b *testing.B) {
	servers, err := Scan()
	if err != nil || len(servers) == 0 {
		b.Skip("no PostgreSQL server running on this host")
	}
	for b.Loop() {
		if _, err := Backends(servers[0]); err != nil {
			b.Fatal(err)
		}
	}
}
