// Package stats holds what the benchmarks share to report and to wait: medians of rounds
// (the machines are noisy, so every figure is a median) and a PostgreSQL port coming up.
package stats

import (
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"time"
)

// Median is the median of v (the mean of the middle two for an even count), 0 for none.
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// WaitPostgres waits up to 30 s for something on 127.0.0.1:port to answer as PostgreSQL
// (a server, a proxy, a pooler).
func WaitPostgres(port int) error {
	for i := 0; i < 300; i++ {
		if exec.Command("pg_isready", "-q", "-h", "127.0.0.1", "-p", strconv.Itoa(port)).Run() == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("port %d not ready", port)
}
