package enforce

import (
	"encoding/binary"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/vigil-db/vigil/pkg/event"
	"github.com/vigil-db/vigil/pkg/pgwire"
	"github.com/vigil-db/vigil/pkg/policy"
	"github.com/vigil-db/vigil/pkg/sqlparse"
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
		Steered: ss.principal.Steered, SteeredBy: ss.principal.SteeredBy,
	}
	return e
}

// emit records a finished request as its own statement.
func (ss *session) emit(h *item, end time.Time) {
	text := ""
	if h.st != nil {
		text = h.st.text
	}
	ss.emitAs(h, h.st, text, "", end)
}

// emitAs records a finished request as statement st, whose text is recorded as text (a
// Query's statement is trimmed as capture records it).
func (ss *session) emitAs(h *item, st *stmt, text, detail string, end time.Time) {
	e := ss.eventBase(h.start)
	e.DurationUS = end.Sub(h.start).Microseconds()
	e.Rows = h.rows
	e.Error, e.ErrorMessage = h.errCode, h.errMsg
	e.PIIColumns, e.MaskedColumns = h.cols.pii, h.cols.masked
	e.Params = h.params
	if h.kind == 'E' {
		b := ss.portalParams[h.name]
		e.Params, detail = b.params, joinDetail(b.detail, detail)
	}
	e.Detail = joinDetail(detail, h.cols.note)
	ss.fillStatement(e, st)
	e.Statement = text
	ss.srv.m.duration.Observe(end.Sub(h.start).Seconds())
	ss.srv.sink.Emit(e)
}

// splitQuery cuts a Query into its statements as PostgreSQL's scanner does: each gets its
// own event with its own rows, error and classification, as capture records them.
func (ss *session) splitQuery(it *item) {
	parts := sqlparse.SplitPostgres(it.st.text)
	if len(parts) == 1 {
		it.text = parts[0]
		return
	}
	it.parts = parts
	it.labels = make([]*stmt, len(parts))
	for i, p := range parts {
		l := ss.decide(p)
		if l.blocked && !it.st.blocked {
			// Refused alone but not within the whole, which is what ran: the event keeps
			// the statement's classification and takes the decision that was applied.
			c := *l
			c.blocked, c.dec.Action, c.dec.Rule, c.dec.Message = false, it.st.dec.Action, it.st.dec.Rule, it.st.dec.Message
			c.approvalID = it.st.approvalID
			l = &c
		}
		it.labels[i] = l
	}
}

func (h *item) numParts() int {
	if h.parts == nil {
		return 1
	}
	return len(h.parts)
}

// part returns the i-th statement of a Query and how it was judged.
func (h *item) part(i int) (string, *stmt) {
	if h.parts == nil {
		return h.text, h.st
	}
	return h.parts[i], h.labels[i]
}

// queryStatementDone records the next statement of a Query, which a CommandComplete or
// EmptyQueryResponse just completed.
func (ss *session) queryStatementDone(h *item) {
	if h.failed || h.idx >= h.numParts() {
		return
	}
	text, st := h.part(h.idx)
	ss.emitAs(h, st, text, "", time.Now())
	h.idx++
	h.rows, h.cols = 0, colSet{}
}

// queryFailed records the statement of a Query that failed; the server runs none after it.
func (ss *session) queryFailed(h *item) {
	if h.failed {
		return
	}
	h.failed = true
	text, st := h.part(min(h.idx, h.numParts()-1))
	switch {
	case h.st.blocked:
		// Refused as a whole: the event is the statement that was refused, or the whole
		// string when only the whole was.
		text, st = h.st.text, h.st
		if h.parts == nil {
			text = h.text
		}
		for i, l := range h.labels {
			if l.blocked {
				text, st = h.parts[i], l
				break
			}
		}
	case h.parts != nil:
		// The server parses the whole string before running any of it: a syntax error in
		// a later statement fails the Query before the first one runs, and its position
		// says which statement it is in.
		if j := pgwire.StatementAt(h.st.text, h.parts, h.errPos); j > h.idx {
			h.idx = j
		}
		if h.idx >= len(h.parts) {
			return // after the last statement: capture records none either
		}
		text, st = h.part(h.idx)
	}
	ss.emitAs(h, st, text, "", time.Now())
}

// queryDone records the statements of a Query that got no response, with the error code
// (when the session ended) and the detail that says so, and returns how many.
func (ss *session) queryDone(h *item, code, msg, detail string) int {
	if h.failed {
		return 0
	}
	now := time.Now()
	n := 0
	for ; h.idx < h.numParts(); h.idx++ {
		text, st := h.part(h.idx)
		h.errCode, h.errMsg = code, msg
		if code != "" {
			h.rows = 0 // as a failed statement
		}
		ss.emitAs(h, st, text, detail, now)
		h.rows, h.cols = 0, colSet{}
		n++
	}
	return n
}

// parsed notes the parameter types a Parse the server accepted declared.
func (ss *session) parsed(h *item) {
	if !ss.srv.cfg.RecordParams {
		return
	}
	if h.oids == nil {
		delete(ss.stmtOIDs, h.name)
		ss.paramTypes.Delete(h.name)
		return
	}
	ss.stmtOIDs[h.name] = h.oids
	ss.paramTypes.Store(h.name, h.oids)
}

// bound renders a Bind's parameters for the events of what its portal runs, with the types
// the statement's Parse or ParameterDescription gave (the server refuses a Bind whose
// count differs, so types of another count were not this statement's).
func (ss *session) bound(h *item) {
	if h.bind == nil {
		delete(ss.portalParams, h.name)
		return
	}
	var b pgproto3.Bind
	if err := b.Decode(h.bind); err != nil {
		ss.portalParams[h.name] = boundParams{detail: "parameters not recorded: malformed Bind"}
		return
	}
	oids := ss.stmtOIDs[h.stmtName]
	if len(oids) != len(b.Parameters) {
		oids = nil
	}
	ss.portalParams[h.name] = boundParams{params: pgwire.FormatParams(b.Parameters, b.ParameterFormatCodes, oids)}
}

// boundParams is what a portal's events record of its Bind.
type boundParams struct {
	params []string
	detail string // why there are none
}

func joinDetail(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "; " + b
}

// declaredTypes reads the parameter types at the end of a Parse message (a count, then
// the oids), nil when none is declared (zeros leave the type to the server).
func declaredTypes(params []byte) []uint32 {
	n := int(binary.BigEndian.Uint16(params))
	oids := make([]uint32, n)
	for i := range oids {
		oids[i] = binary.BigEndian.Uint32(params[2+4*i:])
	}
	return pgwire.ParamTypeOIDs(oids)
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
	e.Decision, e.Rule, e.ApprovalID = st.dec.EventDecision(), st.dec.Rule, st.approvalID
	if e.Decision == "" {
		e.Decision = event.DecisionAllow
	}
	if st.blocked && st.dec.Action != policy.ActionRequireApproval {
		e.Decision = event.DecisionBlock
	}
	if e.Decision == event.DecisionAllow && len(e.MaskedColumns) > 0 {
		e.Decision = event.DecisionMask
	}
	if st.estimate != nil {
		e.Detail = joinDetail(e.Detail, st.estimate.String())
	}
	if info := st.dec.Info; info != nil {
		e.Kind, e.Tables, e.Fingerprint = info.Kind, info.Tables, info.Fingerprint
		e.NoCredentials = !info.MayCarryCredentials()
	}
	ss.srv.m.countStatement(e.Decision)
}
