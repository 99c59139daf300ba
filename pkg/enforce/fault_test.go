package enforce

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/mask"
	"github.com/vigil-db/vigil/pkg/policy"
)

// buggyPolicy panics on the statements and columns the test marks: a stand-in for a bug
// anywhere on a session's path (the policy runs on both of its goroutines).
type buggyPolicy struct{ *policy.Engine }

func (p buggyPolicy) Decide(req *policy.Request) policy.Decision {
	if strings.Contains(req.SQL, "vigil_panic_client") {
		var cols []string
		_ = cols[len(req.SQL)] // index out of range: a runtime error, as a real bug would be
	}
	return p.Engine.Decide(req)
}

func (p buggyPolicy) Column(req *policy.Request, schema, table, column string) (bool, mask.Strategy, bool) {
	if column == "vigil_panic_server" {
		panic("a value that might quote " + req.SQL) // not a runtime error: must not be logged
	}
	return p.Engine.Column(req, schema, table, column)
}

// TestPanicClosesOnlyItsSession: a panic on either side of one session closes that session
// with a FATAL XX000, is counted and recorded as a fault event, and leaves the proxy and a
// concurrent session working.
func TestPanicClosesOnlyItsSession(t *testing.T) {
	pg := startPG(t)
	if _, err := pg.Psql("postgres", "CREATE TABLE t (id int, vigil_panic_server text); INSERT INTO t VALUES (1, 'x'); GRANT SELECT ON t TO analyst;"); err != nil {
		t.Fatal(err)
	}
	h := startWith(t, pg, buggyPolicy{testPolicy(t)})
	ctx := context.Background()

	bystander := h.connect(t, "postgres")
	defer bystander.Close(ctx)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var bystanderErr error
	wg.Add(1)
	go func() { // a session that keeps working while others crash
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var n int
			if err := bystander.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
				bystanderErr = err
				return
			}
		}
	}()

	for _, tc := range []struct{ side, sql string }{
		{"client", "SELECT 1 AS vigil_panic_client"},
		{"server", "SELECT vigil_panic_server FROM t"},
	} {
		c := h.connect(t, "analyst") // not raw: its result columns are planned for masking
		_, err := c.Exec(ctx, tc.sql)
		if pe := asPgError(err); pe == nil || pe.Code != "XX000" || !strings.Contains(pe.Message, "internal error") {
			t.Errorf("%s side: got %v, want FATAL XX000 internal error", tc.side, err)
		}
		if !c.IsClosed() {
			if err := c.Ping(ctx); err == nil {
				t.Errorf("%s side: the session survived its panic", tc.side)
			}
		}
		c.Close(ctx)
		var f *event.Event
		for _, e := range h.log.Events() {
			if e.Type == event.TypeFault && strings.Contains(e.Detail, "on the "+tc.side+" side") {
				f = e
			}
		}
		if f == nil {
			t.Fatalf("%s side: no fault event", tc.side)
		}
		if f.DBUser != "analyst" || f.SessionID == "" {
			t.Errorf("%s side: fault event without its session: %+v", tc.side, f)
		}
		t.Logf("%s side: %s", tc.side, f.Detail)
		if strings.Contains(f.Detail, "might quote") {
			t.Errorf("%s side: the panic value reached the trail: %q", tc.side, f.Detail)
		}
	}
	close(stop)
	wg.Wait()
	if bystanderErr != nil {
		t.Errorf("a concurrent session failed: %v", bystanderErr)
	}
	if got := metricValue(t, h, "vigil_proxy_session_errors_total", reasonInternal); got != 2 {
		t.Errorf("session_errors_total{reason=internal} = %v, want 2", got)
	}
	// The proxy still serves new sessions.
	c := h.connect(t, "postgres")
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("after the faults: %v", err)
	}
}
