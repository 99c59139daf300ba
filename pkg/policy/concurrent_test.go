package policy

import (
	"strconv"
	"sync"
	"testing"
)

// TestDecideConcurrent shares one engine between goroutines, as the proxy does across
// connections (run with -race).
func TestDecideConcurrent(t *testing.T) {
	e, err := NewEngine(Default())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				sql := "DELETE FROM t WHERE id = " + strconv.Itoa(i%50)
				if i%7 == 0 {
					sql = "DELETE FROM t"
				}
				d := e.Decide(&Request{Protocol: "postgres", SQL: sql, Source: "proxy", ServerAddr: "10.0.0." + strconv.Itoa(i%5) + ":5432"})
				if want := i%7 == 0; (d.Action == ActionBlock) != want {
					t.Errorf("%q: %s", sql, d.Action)
				}
			}
		}()
	}
	wg.Wait()
}
