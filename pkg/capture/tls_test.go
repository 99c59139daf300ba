package capture

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/internal/testsink"
	"github.com/vigil-db/vigil/pkg/policy"
)

// gateLabeler holds the capture goroutine on the statement the test marks until the gate
// opens: the ring fills behind it as it would behind a slow reader under load.
type gateLabeler struct {
	*policy.Engine
	held chan struct{}
	gate chan struct{}
}

func (l gateLabeler) Decide(req *policy.Request) policy.Decision {
	if strings.Contains(req.SQL, "vigil_gate") {
		close(l.held)
		<-l.gate
	}
	return l.Engine.Decide(req)
}

// TestTLSSessionReadAfterBackendExit: a short TLS session whose records are read only after
// its backend exited (nothing left in /proc to name its socket) still carries its addresses,
// its client process and the session of its wire flow. Regression: under load the event
// came without client, server or process about one run in six.
func TestTLSSessionReadAfterBackendExit(t *testing.T) {
	srv := testpg.Start(t)
	engine, err := policy.NewEngine(policy.Default())
	if err != nil {
		t.Fatal(err)
	}
	l := gateLabeler{Engine: engine, held: make(chan struct{}), gate: make(chan struct{})}
	_, col := startCaptureWith(t, srv, l)
	opened := false
	defer func() {
		if !opened {
			close(l.gate)
		}
	}()

	psql(t, srv, "127.0.0.1", "disable", "SELECT 'vigil_gate'", "")
	select {
	case <-l.held:
	case <-time.After(10 * time.Second):
		t.Fatal("the capture never reached the gated statement")
	}
	out := strings.TrimSpace(psql(t, srv, "127.0.0.1", "require", "SELECT pg_backend_pid(), 'tls-late'", ""))
	pid, err := strconv.Atoi(strings.SplitN(out, "|", 2)[0])
	if err != nil {
		t.Fatalf("psql printed %q: %v", out, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil; _, err = os.Stat("/proc/" + strconv.Itoa(pid)) {
		if time.Now().After(deadline) {
			t.Fatalf("backend %d still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	opened = true
	close(l.gate)

	e := col.Wait(t, 1, "the TLS statement", testsink.StatementContains("'tls-late'"))[0]
	if !e.TLS || e.BackendPID != int32(pid) || !strings.HasPrefix(e.ClientAddr, "127.0.0.1:") || e.ServerAddr != srv.Addr() ||
		e.Process == nil || e.Process.Comm != "psql" || e.SessionID == "" {
		t.Errorf("TLS event read after its backend exited: %s", testsink.Dump(col.Events()))
	}
}
