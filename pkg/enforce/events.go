package enforce

import (
	"time"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/policy"
)

// One audit event per statement executed or refused, with the same fields capture writes
// (source "proxy"), handed to the sink, which queues it: nothing here waits for storage.

// eventBase fills the fields every event of this session shares.
func (ss *session) eventBase(t time.Time) *event.Event {
	// A recycled event when the trail returns them (it owns each event once emitted).
	e := event.New()
	*e = event.Event{
		Time: t, Type: event.TypeStatement, Source: event.SourceProxy, Protocol: event.ProtocolPostgres,
		DBUser: ss.user, Database: ss.database, Application: ss.application,
		ClientAddr: ss.clientAddr, ServerAddr: ss.serverAddr, SessionID: ss.id,
		BackendPID: int32(ss.backendPID), TLS: ss.tls,
		Process: ss.principal.Process, Identity: ss.principal.Identity,
	}
	return e
}

// emit records a finished request.
func (ss *session) emit(h *item, end time.Time) {
	e := ss.eventBase(h.start)
	e.DurationUS = end.Sub(h.start).Microseconds()
	e.Rows = h.rows
	e.Error, e.ErrorMessage = h.errCode, h.errMsg
	e.PIIColumns, e.MaskedColumns = h.cols.pii, h.cols.masked
	ss.fillStatement(e, h.st)
	ss.srv.m.duration.Observe(end.Sub(h.start).Seconds())
	ss.srv.sink.Emit(e)
}

// emitStartup records a startup message refused by the policy.
func (ss *session) emitStartup(st *stmt) {
	e := ss.eventBase(time.Now())
	e.Error, e.ErrorMessage = "42501", "refused at connection startup"
	ss.fillStatement(e, st)
	ss.srv.sink.Emit(e)
}

func (ss *session) fillStatement(e *event.Event, st *stmt) {
	if st == nil {
		e.Decision = event.DecisionAllow
		ss.srv.m.countStatement(e.Decision)
		return
	}
	e.Statement = st.text
	e.Decision, e.Rule = st.dec.EventDecision(), st.dec.Rule
	if e.Decision == "" {
		e.Decision = event.DecisionAllow
	}
	if st.blocked && st.dec.Action != policy.ActionRequireApproval {
		e.Decision = event.DecisionBlock
	}
	if e.Decision == event.DecisionAllow && len(e.MaskedColumns) > 0 {
		e.Decision = event.DecisionMask
	}
	if info := st.dec.Info; info != nil {
		e.Kind, e.Tables, e.Fingerprint = info.Kind, info.Tables, info.Fingerprint
		e.NoCredentials = !info.MayCarryCredentials()
	}
	ss.srv.m.countStatement(e.Decision)
}
