package capture

import (
	"strings"
	"testing"

	"github.com/vigil-db/vigil/internal/testpg"
	"github.com/vigil-db/vigil/internal/testsink"
	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/policy"
)

// buggyLabeler panics on statements the test marks: a stand-in for a bug anywhere on the
// path of one connection's bytes (decoding, classification and labelling run in one go).
type buggyLabeler struct{ *policy.Engine }

func (l buggyLabeler) Decide(req *policy.Request) policy.Decision {
	if strings.Contains(req.SQL, "vigil_panic") {
		var kinds []string
		_ = kinds[len(req.SQL)] // index out of range: a runtime error, as a real bug would be
	}
	return l.Engine.Decide(req)
}

// TestDecoderPanicLosesOnlyItsSession: a panic while decoding one connection stops the
// decoding of that connection only, and says so with a gap event; capture, and the other
// sessions, go on.
func TestDecoderPanicLosesOnlyItsSession(t *testing.T) {
	srv := testpg.Start(t)
	engine, err := policy.NewEngine(policy.Default())
	if err != nil {
		t.Fatal(err)
	}
	c, col := startCaptureWith(t, srv, buggyLabeler{engine})
	psql(t, srv, "127.0.0.1", "disable", "SELECT 'before the fault'; SELECT 'vigil_panic'; SELECT 'after the fault, same session'", "")
	psql(t, srv, "127.0.0.1", "disable", "SELECT 'another session'", "")

	col.Wait(t, 1, "the next session's statement", testsink.StatementContains("another session"))
	gaps := col.Wait(t, 1, "a gap event for the failed session", func(e *event.Event) bool {
		return e.Type == event.TypeGap && strings.Contains(e.Detail, "internal error")
	})
	g := gaps[0]
	t.Logf("gap: %s", g.Detail)
	if g.SessionID == "" || g.Lost != 1 || g.ClientAddr == "" {
		t.Errorf("gap event without its session: %+v", g)
	}
	for _, e := range col.Events() {
		if e.SessionID == g.SessionID && strings.Contains(e.Statement, "after the fault") {
			t.Errorf("a statement decoded after the session failed: %q", e.Statement)
		}
	}
	if n := value(t, c.m.decoderFaults); n != 1 {
		t.Errorf("vigil_capture_decoder_faults_total = %v, want 1", n)
	}
}
