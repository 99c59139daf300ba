package enforce

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestCatalogHitsDoNotWaitForLookups: while every side connection of a database is busy
// with a lookup (held here by the test), a session whose columns are cached is masked and
// answered at once, and one that needs a lookup waits for a connection, not for a lock
// over someone else's network round trip.
func TestCatalogHitsDoNotWaitForLookups(t *testing.T) {
	h := start(t)
	ctx := context.Background()
	var email string
	warm := h.connect(t, "analyst")
	if err := warm.QueryRow(ctx, "SELECT email FROM customers WHERE id = 1").Scan(&email); err != nil {
		t.Fatal(err)
	}
	d := h.srv.cat.db(h.pg.Addr(), "postgres")
	ss := &session{srv: h.srv, upstream: h.pg.Addr(), database: "postgres"}
	var held []*pgconn.PgConn
	for i := 0; i < catalogConns; i++ {
		conn, err := h.srv.cat.acquire(ctx, ss, d)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, conn)
	}

	c := h.connect(t, "analyst")
	start := time.Now()
	if err := c.QueryRow(ctx, "SELECT email FROM customers WHERE id = 1").Scan(&email); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second || email == "alice@example.com" {
		t.Errorf("cached columns: %q after %v, want masked at once", email, took)
	}

	release := 300 * time.Millisecond
	go func() {
		time.Sleep(release)
		for _, conn := range held {
			d.release(conn)
		}
	}()
	start = time.Now()
	var balance int
	if err := c.QueryRow(ctx, "SELECT balance FROM accounts WHERE id = 1").Scan(&balance); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < release {
		t.Errorf("an uncached lookup finished in %v with every side connection busy", took)
	}
}
