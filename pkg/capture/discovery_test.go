package capture

import (
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/internal/testsink"
	"github.com/vigil-db/vigil/pkg/event"
)

// TestServerStartedAfterTheAgent: discovery finds a PostgreSQL server that starts while the
// agent runs, and its statements are captured from then on.
func TestServerStartedAfterTheAgent(t *testing.T) {
	first := testpg.Start(t)
	c, col := startCapture(t, first)
	later := testpg.Start(t)
	deadline := time.Now().Add(10 * time.Second)
	for !c.isServer(netipPort(later.Port)) {
		if time.Now().After(deadline) {
			t.Fatal("the server started after the agent was not discovered within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	psql(t, later, "127.0.0.1", "disable", "SELECT 'later-m1'", "")
	e := col.Wait(t, 1, "statement on the later server", testsink.StatementContains("later-m1"))[0]
	if e.ServerAddr != later.Addr() || e.DBUser != "postgres" || e.Type != event.TypeStatement {
		t.Errorf("event: %s", testsink.Dump([]*event.Event{e}))
	}
}
